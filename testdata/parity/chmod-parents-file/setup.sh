set -e
umask 022
echo one > one.txt
echo two > two.txt
