set -e
umask 022
mkdir -p a/b a/c
echo 1 > a/b/f1
echo 2 > a/c/f2
