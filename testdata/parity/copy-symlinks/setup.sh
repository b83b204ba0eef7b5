set -e
umask 022
echo target > target.txt
mkdir -p realdir dir
echo inner > realdir/inner
ln -s target.txt link-file
ln -s realdir link-dir
ln -s ../target.txt dir/up-link
ln -s /target.txt dir/abs-link
ln -s missing dir/dangling
echo d > dir/d
