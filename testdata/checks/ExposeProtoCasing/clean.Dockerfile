FROM busybox
EXPOSE 80/tcp 53/udp 8080
