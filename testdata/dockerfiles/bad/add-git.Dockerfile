# expect: 3: ADD from a git repository is not supported (https://example.invalid/repo.git#main); clone it in a RUN step
FROM 127.0.0.1:5000/base/busybox:latest
ADD https://example.invalid/repo.git#main /opt/
