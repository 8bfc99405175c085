#!/usr/bin/env bash
# Installs what Switchboard's tests, demo and benchmark need on Debian 12:
# slapd, Dovecot and Perdition run as the harness's own instances on
# loopback, so their system services are kept from starting.
set -euo pipefail

pkgs=(slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-ldap perdition
      perdition-ldap python3 curl iproute2 make ca-certificates
      roundcube-core roundcube-sqlite3 php-cli imapproxy)
# roundcube-core, php-cli and imapproxy: internal/webmail's tests drive
# Roundcube's own IMAP library through up-imapproxy and the webmail cache.
# (roundcube-core's php dependency pulls in apache2; policy-rc.d below
# keeps it from starting.)
case "${1:-}" in
# `setup.sh --bench` adds what only the benchmark measures: nginx's mail
# proxy.
--bench) pkgs+=(nginx libnginx-mod-mail) ;;
# `setup.sh --webmail` adds what only `make bench-webmail` needs: Roundcube
# under a private Apache, driven by headless Chromium.
--webmail) pkgs+=(apache2 libapache2-mod-php php-sqlite3 chromium chromium-driver
	fonts-dejavu-core sqlite3) ;;
esac
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
	apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${missing[@]}"
	[ "$own_policy" = 1 ] && rm -f "$policy"
fi

# Dovecot's IDLE uses one inotify instance per mailbox watched, all under
# the mail user; the default of 128 runs out under the benchmark's
# thousands of IDLE sessions, and Dovecot then falls back to polling.
if [ "$(id -u)" -eq 0 ] && [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 8192 ]; then
	sysctl -q -w fs.inotify.max_user_instances=8192 || true
fi

go mod download
