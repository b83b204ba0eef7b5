echo one > one.txt
