set -e
echo from-context > file.txt
