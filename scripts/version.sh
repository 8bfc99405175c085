#!/bin/sh
# Prints the version stamped into the binary (main.version) and used for
# the Debian package: VERSION from the environment if set, else derived
# from `git describe`: tag v1.2.0 gives 1.2.0, three commits later
# 1.2.0+3.gabc1234, no tag at all 0.0+gabc1234; uncommitted changes add
# +dirty. Every form is a valid Debian upstream version.
set -eu
if [ -n "${VERSION:-}" ]; then
	echo "$VERSION"
	exit 0
fi
d=$(git describe --tags --always --dirty 2>/dev/null || echo unknown)
case "$d" in
v[0-9]* | [0-9]*.*) ;;
*) d="0.0+g$d" ;;
esac
echo "$d" | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/+dirty/'
