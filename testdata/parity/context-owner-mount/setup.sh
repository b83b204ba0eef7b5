set -e
umask 022
echo file > file
mkdir -p dir/sub
echo f > dir/f
echo g > dir/sub/g
ln -s f dir/sym
chown 1234:5678 file dir dir/f
chown -h 4321:8765 dir/sym
chown 99:98 dir/sub dir/sub/g
