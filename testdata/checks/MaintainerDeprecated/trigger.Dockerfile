FROM busybox
MAINTAINER moby@example.com
