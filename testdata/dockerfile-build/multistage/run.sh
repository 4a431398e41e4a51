#!/bin/sh
cat "$GREETING_FILE"
echo "flavour: $(cat /app/flavour), uid $(id -u)"
