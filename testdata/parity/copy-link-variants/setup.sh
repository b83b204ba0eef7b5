set -e
umask 022
echo one > one.txt
mkdir -p dir/sub
echo f > dir/sub/f
