FROM busybox AS one
CMD ["a"]
FROM one
CMD ["b"]
ENTRYPOINT ["c"]
