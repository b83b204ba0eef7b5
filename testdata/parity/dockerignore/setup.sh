set -e
umask 022
mkdir -p keep/sub drop logs
echo k > keep/k
echo s > keep/sub/s
echo d > drop/d
echo l > logs/a.log
echo important > logs/important.log
echo x > secret.env
printf 'drop\nlogs/*.log\n!logs/important.log\n*.env\nsetup.sh\nkeep/sub/**\n' > .dockerignore
