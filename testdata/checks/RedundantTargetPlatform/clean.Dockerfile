FROM --platform=$BUILDPLATFORM busybox
RUN true
