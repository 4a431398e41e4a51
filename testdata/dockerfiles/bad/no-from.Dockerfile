# expect: 3: the first instruction must be FROM or ARG
ARG V=1
RUN echo $V
FROM 127.0.0.1:5000/base/busybox:latest
