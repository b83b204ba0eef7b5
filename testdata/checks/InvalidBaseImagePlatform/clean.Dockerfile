FROM --platform=linux/arm64 arm64-only AS build-arm64
RUN true
