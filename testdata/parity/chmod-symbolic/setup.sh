set -e
umask 022
echo one > one.txt
mkdir -p dir/sub
echo f > dir/f
chmod 0640 dir/f
echo g > dir/sub/exe
chmod 0750 dir/sub/exe
