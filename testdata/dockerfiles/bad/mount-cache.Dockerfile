# expect: 3: only --mount=type=secret is supported, not type=cache
FROM 127.0.0.1:5000/base/busybox:latest
RUN --mount=type=cache,target=/root/.cache pip install six
