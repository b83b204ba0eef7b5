# check=skip=JSONArgsRecommended,MaintainerDeprecated
FROM busybox as base
MAINTAINER x
CMD run
