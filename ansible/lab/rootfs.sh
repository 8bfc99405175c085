#!/usr/bin/env bash
# Builds the lab's node image: a debootstrapped Debian 12 root with real
# systemd, sshd and Python (what Ansible and the switchboard role need),
# plus Dovecot (disabled) for the dovecot_backend role. The image is
# reused while its .stamp matches the package list; nodes boot it with
# --volatile=overlay, so it is never written to. Usage:
#
#	ansible/lab/rootfs.sh DIR
set -euo pipefail

dir=${1:?usage: rootfs.sh DIR}
include=systemd,systemd-sysv,dbus,openssh-server,python3,python3-apt,iproute2,procps,ca-certificates,adduser,dovecot-imapd,dovecot-pop3d
stamp="bookworm minbase $include v1"

if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
	echo "rootfs: $dir is up to date"
	exit 0
fi
rm -rf "$dir" "$dir.tmp"
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
echo "rootfs: debootstrap into $dir from $mirror (2-3 minutes)"
debootstrap --variant=minbase --include="$include" bookworm "$dir.tmp" "$mirror" >"$dir.log" 2>&1 ||
	{ tail -20 "$dir.log" >&2; exit 1; }
# Dovecot comes in the image so that the dovecot_backend role can be
# applied to a node, but no node starts it unless that role asks.
rm -f "$dir.tmp"/etc/systemd/system/multi-user.target.wants/dovecot.service
# Nodes have no resolver and no route out: apt must not try the network.
: >"$dir.tmp/etc/apt/sources.list"
rm -f "$dir.tmp"/etc/apt/sources.list.d/*
echo "$stamp" >"$dir.tmp/.stamp"
mv "$dir.tmp" "$dir"
echo "rootfs: done ($(du -sh "$dir" | cut -f1))"
