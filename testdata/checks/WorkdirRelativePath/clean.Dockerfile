FROM busybox
WORKDIR /app
WORKDIR src
