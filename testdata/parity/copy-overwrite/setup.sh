set -e
umask 022
echo new > file
mkdir -p dir
echo new > dir/new
chmod 0700 dir
