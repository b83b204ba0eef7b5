set -e
umask 022
printf '#!/bin/sh\n' > setuid
chmod 4755 setuid
printf 'x\n' > setgid
chmod 2750 setgid
mkdir sticky
chmod 1777 sticky
echo e > exec
chmod 0511 exec
echo r > readonly
chmod 0400 readonly
mkdir private
chmod 0700 private
echo p > private/p
rm setup.sh
