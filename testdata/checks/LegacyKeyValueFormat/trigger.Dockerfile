FROM busybox
ENV DEBUG true
LABEL org.example.team platform
