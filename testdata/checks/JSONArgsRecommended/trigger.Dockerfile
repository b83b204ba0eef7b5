FROM busybox
ENTRYPOINT my-app start
