# check=experimental=CopyIgnoredFile
FROM busybox
COPY README.md src /x/
COPY --from=busybox /bin/node_modules /y
