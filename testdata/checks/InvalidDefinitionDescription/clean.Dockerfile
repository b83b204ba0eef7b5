# check=experimental=InvalidDefinitionDescription
# builder compiles the app
FROM busybox AS builder
# VERSION of the app
ARG VERSION=1

# not a description (an empty comment line ends it: BuildKit keeps comments across blank lines)
#
ARG OTHER=2
