# expect: 3: ADD from a URL is not supported; download it in a RUN step (https://example.invalid/x.tar.gz)
FROM 127.0.0.1:5000/base/busybox:latest
ADD https://example.invalid/x.tar.gz /opt/
