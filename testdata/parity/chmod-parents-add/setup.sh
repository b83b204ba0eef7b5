set -e
umask 022
echo one > one.txt
mkdir -p dir/sub src/t/d
echo f > dir/f
echo g > dir/sub/g
echo x > src/t/d/x
chmod 0604 src/t/d/x
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cf archive.tar t
rm -rf src
