#!/usr/bin/env bash
# Installs what Switchboard's tests, demo and benchmark need on Debian 12:
# slapd, Dovecot and Perdition run as the harness's own instances on
# loopback, so their system services are kept from starting.
set -euo pipefail

pkgs=(slapd ldap-utils dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-ldap perdition
      perdition-ldap python3 curl iproute2 make ca-certificates
      roundcube-core roundcube-sqlite3 php-cli imapproxy)
# roundcube-core, php-cli and imapproxy: internal/webmail's tests drive
# Roundcube's own IMAP library through up-imapproxy and the webmail cache.
# (roundcube-core's php dependency pulls in apache2; policy-rc.d below
# keeps it from starting.)
# `setup.sh --bench` adds what only the benchmark measures: nginx's mail
# proxy; `setup.sh --deb` what checks the Debian package (make deb);
# `setup.sh --webmail` what only `make bench-webmail` needs: Roundcube
# under a private Apache, driven by headless Chromium.
case "${1:-}" in
--bench) pkgs+=(nginx libnginx-mod-mail) ;;
--deb) pkgs+=(lintian) ;;
--webmail) pkgs+=(apache2 libapache2-mod-php php-sqlite3 chromium chromium-driver
	fonts-dejavu-core sqlite3) ;;
--lab) pkgs+=(ansible ansible-lint openssh-server openssh-client systemd-container debootstrap
	prometheus) ;;
esac
# lock_held reports whether another process holds one of apt's locks
# (fcntl locks, which /proc/locks lists by inode).
lock_held() {
	local f ino
	for f in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock /var/cache/apt/archives/lock; do
		[ -e "$f" ] || continue
		ino=$(stat -c %i "$f")
		grep -q ":$ino " /proc/locks 2>/dev/null && return 0
	done
	return 1
}
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
	# Another apt run (unattended-upgrades on a fresh machine) may hold the
	# dpkg or the lists lock: wait for it, up to lock_wait seconds each.
	lock_wait=600
	apt_wait() {
		local waited=0
		until apt-get -o DPkg::Lock::Timeout=$lock_wait "$@"; do
			# apt-get exits 100 both for a held lock and for real errors;
			# retry only while someone holds one of the locks.
			if ! lock_held || [ $waited -ge $lock_wait ]; then
				return 1
			fi
			echo "setup: waiting for another apt run to finish" >&2
			sleep 5
			waited=$((waited + 5))
		done
	}
	apt_wait update -q
	apt_wait install -y -q --no-install-recommends "${missing[@]}"
	[ "$own_policy" = 1 ] && rm -f "$policy"
fi

# Dovecot's IDLE uses one inotify instance per mailbox watched, all under
# the mail user; the default of 128 runs out under the benchmark's
# thousands of IDLE sessions, and Dovecot then falls back to polling.
if [ "$(id -u)" -eq 0 ] && [ "$(cat /proc/sys/fs/inotify/max_user_instances)" -lt 8192 ]; then
	sysctl -q -w fs.inotify.max_user_instances=8192 || true
fi

go mod download
