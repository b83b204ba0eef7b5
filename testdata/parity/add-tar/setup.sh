set -e
umask 022
mkdir -p src/tree/empty src/tree/deep/er
echo file > src/tree/file
chmod 0751 src/tree/file
echo deep > src/tree/deep/er/x
ln -s file src/tree/sym
ln src/tree/file src/tree/hard
printf '#!/bin/sh\n' > src/tree/suid
chmod 4755 src/tree/suid
tar --sort=name --mtime=@0 --owner=12 --group=34 --numeric-owner -C src -czf archive.tar.gz tree
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cf plain.tar tree
echo 'not an archive' | gzip -n -c > notatar.gz
rm -rf src
