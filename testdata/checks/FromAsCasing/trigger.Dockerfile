FROM busybox as builder
RUN true
