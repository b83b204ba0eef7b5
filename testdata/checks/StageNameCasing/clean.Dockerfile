FROM busybox AS builder
RUN true
