# check=experimental=InvalidDefinitionDescription
# build the app
FROM busybox AS builder
# the version
ARG VERSION=1
