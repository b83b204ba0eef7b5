set -e
umask 022
echo one > one.txt
echo two > two.txt
echo 1 > file1.md
echo 2 > file2.md
echo 3 > file3.md
mkdir -p dir/sub
echo a > dir/a
echo b > dir/sub/b
