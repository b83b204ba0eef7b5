FROM busybox AS base
FROM busybox AS base
RUN true
