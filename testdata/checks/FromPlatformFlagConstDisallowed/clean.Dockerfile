FROM --platform=linux/amd64 busybox AS builder-amd64
FROM --platform=$BUILDPLATFORM busybox
RUN true
