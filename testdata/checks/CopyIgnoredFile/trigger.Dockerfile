# check=experimental=CopyIgnoredFile
FROM busybox
COPY ./node_modules/x /x
ADD notes.md /
