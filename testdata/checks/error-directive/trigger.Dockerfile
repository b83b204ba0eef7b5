# check=error=true
FROM busybox
CMD run
