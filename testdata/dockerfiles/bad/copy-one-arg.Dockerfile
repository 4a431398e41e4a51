# expect: 5: COPY needs at least a source and a destination
FROM 127.0.0.1:5000/base/busybox:latest
RUN true

COPY \
  only-one
