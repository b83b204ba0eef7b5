set -e
umask 022
mkdir -p src/tree/empty src/tree/deep
echo file > src/tree/file
chmod 0751 src/tree/file
echo deep > src/tree/deep/x
ln -s file src/tree/sym
ln src/tree/file src/tree/hard
tar --sort=name --mtime=@0 --owner=12 --group=34 --numeric-owner -C src -czf archive.tar.gz tree
tar --sort=name --mtime=@0 --owner=56 --group=78 --numeric-owner -C src -cf archive.tar tree
echo 'not an archive' > notatar.txt
rm -rf src
