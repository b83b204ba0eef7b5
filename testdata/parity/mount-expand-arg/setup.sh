set -e
umask 022
mkdir dir
echo bound > dir/f
