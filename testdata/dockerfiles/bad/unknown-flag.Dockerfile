# expect: 3: unknown flag --chwon for COPY (it takes --from, --chown, --chmod, --link, --parents, --exclude)
FROM 127.0.0.1:5000/base/busybox:latest
COPY --chwon=1000 a /a
