from busybox
run true
copy . /
