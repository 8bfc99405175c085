#!/usr/bin/env bash
# Runs Switchboard's benchmark (see docs/performance.md):
#
#   make bench                  # full run, about 40 minutes
#   BENCH_QUICK=1 make bench    # quick run, about 4 minutes
#
# Other BENCH_* variables and any arguments are passed on (bench -h lists
# them). Needs root, like the integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages (Perdition and its LDAP map, nginx and its mail module
# among them) come from `scripts/setup.sh --bench`, which `make bench` runs
# first.
mkdir -p bin
go build -o bin/sbbench ./bench
args=()
if [ -z "${BENCH_SWITCHBOARD:-}" ] && [ -x bin/switchboard ]; then
	args+=(-switchboard bin/switchboard)
fi
exec bin/sbbench "${args[@]}" "$@"
