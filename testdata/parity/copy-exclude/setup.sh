set -e
umask 022
mkdir -p dir/sub
echo a > dir/a.txt
echo l > dir/b.log
echo t > dir/c.tmp
echo s > dir/sub/s.txt
