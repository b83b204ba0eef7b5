set -e
umask 022
mkdir dir
echo orig > dir/f
