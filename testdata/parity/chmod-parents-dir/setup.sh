set -e
umask 022
mkdir -p dir/sub/empty
echo f > dir/f
chmod 0600 dir/f
echo g > dir/sub/g
chmod 0750 dir/sub
