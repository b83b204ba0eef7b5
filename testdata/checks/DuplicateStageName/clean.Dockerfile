FROM busybox AS base
FROM base AS final
RUN true
