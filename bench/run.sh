#!/usr/bin/env bash
# Runs Switchboard's benchmark (see docs/performance.md):
#
#   make bench                  # full run, about 20 minutes
#   BENCH_QUICK=1 make bench    # quick run, about 3 minutes
#
# Other BENCH_* variables and any arguments are passed on (bench -h lists
# them). Needs root, like the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Perdition's LDAP map is packaged apart from perdition itself.
if ! dpkg-query -W -f='${Status}' perdition-ldap 2>/dev/null | grep -q "ok installed"; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench: perdition-ldap is missing (run as root to install it)" >&2
		exit 1
	fi
	echo "bench: installing perdition-ldap"
	# Keep the package's service (on the standard ports) from starting.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		own_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends perdition-ldap ||
		{ apt-get update -q && apt-get install -y -q --no-install-recommends perdition-ldap; }
	[ "$own_policy" = 1 ] && rm -f "$policy"
fi

mkdir -p bin
go build -o bin/sbbench ./bench
args=()
if [ -z "${BENCH_SWITCHBOARD:-}" ] && [ -x bin/switchboard ]; then
	args+=(-switchboard bin/switchboard)
fi
exec bin/sbbench "${args[@]}" "$@"
