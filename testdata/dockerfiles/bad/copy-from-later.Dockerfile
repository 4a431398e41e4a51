# expect: 4: COPY --from=later: stage "later" is defined after this one; stages can only copy from earlier ones
FROM 127.0.0.1:5000/base/busybox:latest AS first
RUN true
COPY --from=later /x /x
FROM 127.0.0.1:5000/base/busybox:latest AS later
FROM 127.0.0.1:5000/base/busybox:latest
COPY --from=first /x /y
