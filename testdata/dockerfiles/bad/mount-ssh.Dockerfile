# expect: 3: RUN --mount=type=ssh is not supported: kiln forwards no SSH agent
FROM 127.0.0.1:5000/base/busybox:latest
RUN --mount=type=ssh git clone git@example.invalid:kiln/kiln.git
