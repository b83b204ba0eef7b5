set -e
umask 022
echo one > one.txt
echo two > two.txt
mkdir -p dir/sub/empty dir/sticky sub1/inner sub2
chmod 1777 dir/sticky
chmod 0700 dir/sub
echo secret > dir/sub/private
chmod 0600 dir/sub/private
echo hard > dir/hard-a
ln dir/hard-a dir/hard-b
ln -s sub/private dir/link-rel
ln -s /one.txt dir/link-abs
ln -s one.txt link-to-one
printf '#!/bin/sh\n' > suid
chmod 4755 suid
printf '#!/bin/sh\n' > sgid
chmod 2711 sgid
echo a > sub1/inner/a
echo b > sub2/b
