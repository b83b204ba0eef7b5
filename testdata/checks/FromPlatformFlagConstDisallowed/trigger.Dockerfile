FROM --platform=linux/amd64 busybox AS builder
RUN true
