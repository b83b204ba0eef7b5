set -e
umask 022
echo one > one.txt
mkdir -p dir/sub
echo a > dir/a
echo b > dir/sub/b
