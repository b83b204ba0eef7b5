FROM busybox AS Builder
RUN true
