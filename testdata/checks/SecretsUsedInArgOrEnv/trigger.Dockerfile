FROM busybox
ARG GITHUB_TOKEN
ENV aws_secret_access_key=x
