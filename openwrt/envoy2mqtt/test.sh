#!/bin/sh
# The feed's runtime test: `test.sh <package> <version>` on the target.

[ "$1" = envoy2mqtt ] || exit 0

envoy2mqtt --version | grep -F "$2" || exit 1

# An Envoy that is not there: one clear error and exit 1, not a hang or a crash.
dir=$(mktemp -d)
ENVOY_HOST=https://127.0.0.1:1 STATE_DIR="$dir" HA_DISCOVERY=false \
	envoy2mqtt --once --dry-run > "$dir/out" 2> "$dir/err"
code=$?
cat "$dir/err"
rm -rf "$dir"
[ "$code" = 1 ]
