#!/usr/bin/env bash
# Installs what Switchboard's tests, demo and benchmark need on Debian 12:
# slapd, Dovecot and Perdition run as the harness's own instances on
# loopback, so their system services are kept from starting.
set -euo pipefail

pkgs=(slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-ldap perdition
      perdition-ldap python3 curl iproute2 make ca-certificates)
# `setup.sh --bench` adds what only the benchmark measures: nginx's mail
# proxy.
if [ "${1:-}" = "--bench" ]; then
	pkgs+=(nginx libnginx-mod-mail)
fi
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	echo "setup: installing ${missing[*]}"
	# Keep the packages' own services (on the standard ports) from starting.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		own_policy=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
	[ "$own_policy" = 1 ] && rm -f "$policy"
fi

# Dovecot's IDLE uses one inotify instance per mailbox watched, all under
# the mail user; the default of 128 runs out under the benchmark's
# thousands of IDLE sessions, and Dovecot then falls back to polling.
if [ "$(id -u)" -eq 0 ] && [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 8192 ]; then
	sysctl -q -w fs.inotify.max_user_instances=8192 || true
fi

go mod download
