FROM --platform=$TARGETPLATFORM busybox
RUN true
