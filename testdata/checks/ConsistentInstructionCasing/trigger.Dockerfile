FROM busybox
run true
RUN true
