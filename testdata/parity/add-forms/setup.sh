set -e
umask 022
echo one > one.txt
mkdir -p dir src/t
echo f > dir/f
echo x > src/t/x
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -czf archive.tar.gz t
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cjf archive.tar.bz2 t
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cJf archive.tar.xz t
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cf - t | zstd -q -c --no-check > archive.tar.zst
echo 'not an archive' | gzip -n -c > notatar.gz
rm -rf src
