# expect: 3: unknown instruction "FORM" (did you mean FROM?)

FORM 127.0.0.1:5000/base/busybox:latest
