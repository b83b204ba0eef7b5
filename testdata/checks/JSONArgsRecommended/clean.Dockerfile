FROM busybox
ENTRYPOINT ["my-app", "start"]
FROM busybox
SHELL ["/bin/sh", "-c"]
CMD my-app start
