# expect: 3: duplicate stage name "build"
FROM 127.0.0.1:5000/base/busybox:latest AS build
FROM 127.0.0.1:5000/base/busybox:latest AS Build
