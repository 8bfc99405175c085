#!/usr/bin/env bash
# The Ansible lab (make lab-test): three real systemd hosts on this
# machine, each a network namespace on a private bridge (10.77.0.0/24, no
# default route) booting a debootstrapped Debian 12 with systemd-nspawn,
# reached over SSH; slapd and two Dovecot backends on the bridge's host
# side. Then:
#
#   1. site.yml converges the three nodes; a second run changes nothing;
#   2. under a client loop (labtool probe), rolling.yml upgrades them to a
#      second build; the probe reports refusals, failed logins and what the
#      IDLE sessions saw; a second rolling.yml changes nothing;
#   3. a broken build (its binary passes `check` but `serve` exits 1) stops
#      the rollout at the first node, whose old process goes on serving;
#      the other two are untouched;
#   4. the unit's sandbox is enforced on a node;
#   5. the dovecot_backend role, applied to node3, gives a Dovecot that
#      trusts the three nodes; a second run changes nothing.
#
# Usage (as root): ansible/lab/lab.sh [run|down]. LAB (default
# /tmp/switchboard-lab) holds the state, ROOTFS (default
# /var/tmp/switchboard-lab/rootfs) the node image, reused between runs.
# Prints PASS/FAIL per check and "N passed, M failed"; exits 1 on a failure.
# About 7-8 minutes here once the image exists (debootstrap: 3 to 25
# minutes, depending on the mirror). Not in .ci/run yet: in one of two runs
# one connection was reset before its greeting during a node's hand-over
# (1 of ~8,300 pinned logins), which the strict check counts.
# ../shared/recipes/ansible-lab.md explains the namespaces and nspawn flags.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LAB=${LAB:-/tmp/switchboard-lab}
ROOTFS=${ROOTFS:-/var/tmp/switchboard-lab/rootfs}
NET=10.77.0
BRIDGE=sblab0
NODES=(1 2 3)
V1=0.1.0+lab1
V2=0.1.0+lab2
V3=0.1.0+lab3broken

passed=0
failed=0
t0=$(date +%s)

say() { printf '[%4ds] %s\n' $(($(date +%s) - t0)) "$*"; }
pass() { passed=$((passed + 1)); say "PASS $*"; }
fail() { failed=$((failed + 1)); say "FAIL $*"; }
die() { say "ERROR $*"; exit 1; }
node_ip() { echo "$NET.1$1"; }

# ---------------------------------------------------------------- teardown

down() {
	local pid i
	[ -f "$LAB/probe.pid" ] && kill "$(cat "$LAB/probe.pid")" 2>/dev/null
	[ -f "$LAB/backends.pid" ] && kill "$(cat "$LAB/backends.pid")" 2>/dev/null
	for i in "${NODES[@]}"; do
		pid=$(cat "$LAB/nodes/node$i/nspawn.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
	done
	for _ in $(seq 50); do
		local alive=0
		for i in "${NODES[@]}"; do
			pid=$(cat "$LAB/nodes/node$i/nspawn.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && alive=1
		done
		[ $alive = 0 ] && break
		sleep 0.2
	done
	for i in "${NODES[@]}"; do
		pid=$(cat "$LAB/nodes/node$i/nspawn.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
		rm -f "$LAB/nodes/node$i/nspawn.pid"
		ip netns del "node$i" 2>/dev/null
	done
	for h in systemd unified; do
		[ -d "/sys/fs/cgroup/$h/sblab" ] &&
			find "/sys/fs/cgroup/$h/sblab" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	ip link del "$BRIDGE" 2>/dev/null
	if [ -f "$LAB/backends.pid" ]; then
		pid=$(cat "$LAB/backends.pid")
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		rm -f "$LAB/backends.pid"
	fi
	rm -f "$LAB/probe.pid"
	return 0
}

# ----------------------------------------------------------------- set up

preflight() {
	[ "$(id -u)" = 0 ] || die "run as root"
	"$repo/scripts/setup.sh" --lab >"$LAB/setup.log" 2>&1 || { tail "$LAB/setup.log"; die "scripts/setup.sh --lab failed"; }
	if ! ip netns add sblab-probe 2>/dev/null; then
		say "SKIP: cannot create network namespaces here"
		exit 0
	fi
	ip netns del sblab-probe
	[ -d /sys/fs/cgroup/systemd ] && [ -d /sys/fs/cgroup/unified ] ||
		die "this lab expects the hybrid cgroup layout (/sys/fs/cgroup/systemd and unified)"
}

# fixtures: the lab's SSH keys, three packages (v1, v2 and a broken v3)
# and the probe.
fixtures() {
	local i
	mkdir -p "$LAB/ssh" "$LAB/debs" "$LAB/cp" "$LAB/ansible-tmp" "$LAB/logs"
	[ -f "$LAB/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C sblab -f "$LAB/ssh/id_ed25519"
	cp "$LAB/ssh/id_ed25519.pub" "$LAB/ssh/authorized_keys"
	: >"$LAB/known_hosts"
	for i in "${NODES[@]}"; do
		local d=$LAB/nodes/node$i
		mkdir -p "$d"
		[ -f "$d/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C "node$i" -f "$d/host_key"
		echo "node$i" >"$d/hostname"
		printf 'ListenAddress %s:22\nHostKey /etc/ssh/lab_host_key\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n' \
			"$(node_ip "$i")" >"$d/lab.conf"
		echo "$(node_ip "$i") $(cut -d' ' -f1,2 "$d/host_key.pub")" >>"$LAB/known_hosts"
	done
	(cd "$repo" && go build -o "$LAB/labtool" ./ansible/lab/labtool) || die "go build labtool"
	rm -f "$LAB/debs/"*.deb # built from this tree on every run
	for v in $V1 $V2; do
		(cd "$repo" && VERSION=$v GO=go ./scripts/mkdeb.sh "$LAB/debs") >"$LAB/logs/mkdeb-$v.log" 2>&1 ||
			{ tail "$LAB/logs/mkdeb-$v.log"; die "make deb $v"; }
	done
	broken_deb
}

# broken_deb repacks v2 as v3 with a binary that passes `switchboard
# check` (ExecStartPre and the role's validate:) but whose `serve` exits 1.
broken_deb() {
	local out=$LAB/debs/switchboard_${V3}_amd64.deb w=$LAB/broken
	rm -rf "$w"
	dpkg-deb -R "$LAB/debs/switchboard_${V2}_amd64.deb" "$w"
	mkdir -p "$w/usr/lib/switchboard"
	mv "$w/usr/bin/switchboard" "$w/usr/lib/switchboard/switchboard.real"
	cat >"$w/usr/bin/switchboard" <<-'EOF'
		#!/bin/sh
		# The lab's deliberately broken build.
		if [ "$1" = serve ]; then
			echo "switchboard: deliberately broken lab build" >&2
			exit 1
		fi
		exec /usr/lib/switchboard/switchboard.real "$@"
	EOF
	chmod 0755 "$w/usr/bin/switchboard"
	sed -i "s/^Version: .*/Version: $V3/" "$w/DEBIAN/control"
	(cd "$w" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum >DEBIAN/md5sums)
	dpkg-deb --root-owner-group -Zxz --build "$w" "$out" >/dev/null || die "build the broken package"
}

net_up() {
	local i
	ip link add "$BRIDGE" type bridge
	ip addr add "$NET.1/24" dev "$BRIDGE"
	for a in 2 3 4; do ip addr add "$NET.$a/24" dev "$BRIDGE"; done # slapd, mx1, mx2
	ip link set "$BRIDGE" up
	for i in "${NODES[@]}"; do
		ip netns add "node$i"
		ip link add "veth-sb$i" type veth peer name eth0 netns "node$i"
		ip link set "veth-sb$i" master "$BRIDGE" up
		ip -n "node$i" addr add "$(node_ip "$i")/24" dev eth0
		ip -n "node$i" link set lo up
		ip -n "node$i" link set eth0 up # no default route: nothing leaves the /24
	done
}

backends_up() {
	local nodes
	nodes=$(for i in "${NODES[@]}"; do node_ip "$i"; done | paste -sd,)
	rm -rf "$LAB/backends"
	mkdir -p "$LAB/backends"
	"$LAB/labtool" backends -dir "$LAB/backends" -ldap-ip "$NET.2" -mx1-ip "$NET.3" -mx2-ip "$NET.4" \
		-trusted "$NET.0/24" -nodes "$nodes" >"$LAB/logs/backends.log" 2>&1 &
	echo $! >"$LAB/backends.pid"
	for _ in $(seq 300); do
		[ -f "$LAB/backends/ready" ] && return
		kill -0 "$(cat "$LAB/backends.pid")" 2>/dev/null || break
		sleep 0.2
	done
	tail "$LAB/logs/backends.log"
	die "slapd and the Dovecot backends did not start"
}

# node_up boots node $1: systemd as PID 1 in its own network, mount and
# cgroup, on a volatile overlay of the image.
node_up() {
	local i=$1 d=$LAB/nodes/node$1
	for h in systemd unified; do mkdir -p "/sys/fs/cgroup/$h/sblab/node$i"; done
	setsid nsenter --net="/run/netns/node$i" unshare --mount --propagation private -- sh -c '
		for h in systemd unified; do echo $$ > /sys/fs/cgroup/$h/sblab/node'"$i"'/cgroup.procs; done
		mount -t tmpfs -o mode=755 nspawn-run /run
		exec "$@"' sh \
		systemd-nspawn --quiet --register=no --keep-unit --console=passive \
		-D "$ROOTFS" --volatile=overlay --machine="node$i" --hostname="node$i" \
		--bind-ro="$d/lab.conf:/etc/ssh/sshd_config.d/lab.conf" \
		--bind-ro="$d/host_key:/etc/ssh/lab_host_key" --bind-ro="$d/hostname:/etc/hostname" \
		--bind-ro="$LAB/ssh/authorized_keys:/root/.ssh/authorized_keys" \
		-b >"$d/console.log" 2>&1 </dev/null &
	echo $! >"$d/nspawn.pid"
}

lab_ssh() {
	local i=$1
	shift
	ssh -q -i "$LAB/ssh/id_ed25519" -o UserKnownHostsFile="$LAB/known_hosts" -o StrictHostKeyChecking=yes \
		-o BatchMode=yes -o ConnectTimeout=3 "root@$(node_ip "$i")" "$@"
}

nodes_up() {
	local i
	for i in "${NODES[@]}"; do node_up "$i"; done
	for i in "${NODES[@]}"; do
		local ok=0
		for _ in $(seq 120); do
			if lab_ssh "$i" true 2>/dev/null; then ok=1; break; fi
			sleep 0.5
		done
		[ $ok = 1 ] || { tail "$LAB/nodes/node$i/console.log"; die "node$i: no SSH"; }
	done
	for i in "${NODES[@]}"; do
		local st
		st=$(lab_ssh "$i" 'hostname; cat /proc/1/comm; systemctl is-system-running --wait' 2>&1 | paste -sd' ')
		case "$st" in
		"node$i systemd running") pass "node$i boots systemd as PID 1, no failed unit" ;;
		*) fail "node$i: $st" ;;
		esac
	done
}

# inventory writes the lab's Ansible configuration, inventory and secrets.
inventory() {
	cat >"$LAB/ansible.cfg" <<-EOF
		[defaults]
		interpreter_python = /usr/bin/python3
		local_tmp = $LAB/ansible-tmp
		remote_tmp = /tmp/.ansible-tmp
		callbacks_enabled = ansible.posix.profile_tasks
		display_skipped_hosts = False
		forks = 3
		[ssh_connection]
		pipelining = True
		ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=$LAB/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes
		control_path_dir = $LAB/cp
	EOF
	{
		echo "[switchboard]"
		for i in "${NODES[@]}"; do
			local ip
			ip=$(node_ip "$i")
			echo "node$i ansible_host=$ip switchboard_tls_cert_src=$LAB/backends/certs/$ip.pem switchboard_tls_key_src=$LAB/backends/certs/$ip.key"
		done
		cat <<-EOF

			[switchboard:vars]
			ansible_user=root
			ansible_ssh_private_key_file=$LAB/ssh/id_ed25519
			switchboard_expect_hostname=true
			switchboard_deb_dir=$LAB/debs
			switchboard_hostname=mail.lab.example.org
			switchboard_admin_address=0.0.0.0:8025
			switchboard_drain_grace=5s
			switchboard_drain_wait_seconds=3
			switchboard_health_retries=15

			# The dovecot_backend role, proved on node3 beside Switchboard
			# (the lab's real backends are the testbed's, on the host).
			[dovecot]
			node3

			[dovecot:vars]
			ansible_user=root
			ansible_ssh_private_key_file=$LAB/ssh/id_ed25519
			dovecot_backend_listen=127.0.0.1
			dovecot_backend_imap_port=10143
			dovecot_backend_pop3_port=10110
			dovecot_backend_apply_sysctl=false
		EOF
	} >"$LAB/inventory.ini"
	if [ ! -f "$LAB/secrets.yml" ]; then
		(
			umask 077
			printf 'switchboard_admin_token: "%s"\nswitchboard_cluster_keys: ["%s"]\n' \
				"$(head -c 24 /dev/urandom | base64 | tr -d '\n')" "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" \
				>"$LAB/secrets.yml"
		)
	fi
	TOKEN=$(sed -n 's/^switchboard_admin_token: "\(.*\)"$/\1/p' "$LAB/secrets.yml")
}

# play NAME PLAYBOOK [ARGS…] runs a playbook, logging to logs/NAME.log;
# prints its recap and duration; returns its status.
play() {
	local name=$1 book=$2 start rc
	shift 2
	start=$(date +%s)
	ANSIBLE_CONFIG=$LAB/ansible.cfg ANSIBLE_HOME=$LAB/ansible-home ANSIBLE_LOCAL_TEMP=$LAB/ansible-tmp \
		ansible-playbook -i "$LAB/inventory.ini" -e "@$LAB/backends/vars.yml" -e "@$LAB/secrets.yml" \
		"$repo/ansible/$book" "$@" >"$LAB/logs/$name.log" 2>&1
	rc=$?
	sed -n '/PLAY RECAP/,/^$/p' "$LAB/logs/$name.log" | sed 's/^/    /'
	say "$name: ansible-playbook $book exited $rc after $(($(date +%s) - start)) s (log: $LAB/logs/$name.log)"
	return $rc
}

# changed_total NAME sums changed= over the recap of logs/NAME.log.
changed_total() {
	sed -n '/PLAY RECAP/,$p' "$LAB/logs/$1.log" | grep -o 'changed=[0-9]*' | awk -F= '{s+=$2} END {print s+0}'
}

# status I prints node I's /status JSON, fetched from the host.
status() {
	curl -fsS -m 3 -H "Authorization: Bearer $TOKEN" "http://$(node_ip "$1"):8025/status"
}

# check_cluster VERSION checks that every node runs VERSION and sees all
# three members alive.
check_cluster() {
	local i v alive
	for i in "${NODES[@]}"; do
		read -r v alive < <(status "$i" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["version"], sum(m["state"]=="alive" for m in s["members"]))')
		if [ "$v" = "$1" ] && [ "$alive" = 3 ]; then
			pass "node$i runs $v and sees 3 members alive"
		else
			fail "node$i runs '$v', sees '$alive' members alive (want $1, 3)"
		fi
	done
}

# ------------------------------------------------------------------ steps

step_converge() {
	say "step 1: site.yml converges the three nodes"
	if play site1 site.yml -e switchboard_version=$V1; then pass "site.yml converged"; else fail "site.yml"; return; fi
	check_cluster $V1
	play site2 site.yml -e switchboard_version=$V1 || fail "second site.yml"
	local c
	c=$(changed_total site2)
	[ "$c" = 0 ] && pass "second site.yml: changed=0" || fail "second site.yml: changed=$c"
}

step_rolling() {
	say "step 2: rolling.yml to $V2 under the probe"
	rm -f "$LAB/probe.stop"
	"$LAB/labtool" probe -nodes "$(node_ip 1),$(node_ip 2),$(node_ip 3)" -ca "$LAB/backends/certs/ca.pem" \
		-stop-file "$LAB/probe.stop" -report "$LAB/probe.json" >"$LAB/logs/probe.log" 2>&1 &
	echo $! >"$LAB/probe.pid"
	sleep 3
	if play rolling1 rolling.yml -e switchboard_version=$V2; then pass "rolling.yml upgraded to $V2"; else fail "rolling.yml to $V2"; fi
	sleep 3
	touch "$LAB/probe.stop"
	wait "$(cat "$LAB/probe.pid")"
	rm -f "$LAB/probe.pid"
	sed 's/^/    /' "$LAB/logs/probe.log"
	judge_probe
	check_cluster $V2
	play rolling2 rolling.yml -e switchboard_version=$V2 || fail "second rolling.yml"
	local c
	c=$(changed_total rolling2)
	[ "$c" = 0 ] && pass "second rolling.yml: changed=0" || fail "second rolling.yml: changed=$c"
}

# judge_probe turns the probe's report into PASS/FAIL lines. Refusals by
# the node being restarted are failures only once a socket unit holds the
# listeners across the restart (dist/switchboard.socket).
judge_probe() {
	local strict=0
	[ -f "$repo/dist/switchboard.socket" ] && strict=1
	while read -r verdict msg; do
		case $verdict in
		PASS) pass "$msg" ;;
		FAIL) fail "$msg" ;;
		*) say "$verdict $msg" ;;
		esac
	done < <(python3 "$here/judge.py" "$LAB/probe.json" "$strict")
}

step_broken() {
	say "step 3: rolling.yml to the broken build $V3"
	if play rolling3 rolling.yml -e switchboard_version=$V3 -e switchboard_health_retries=8; then
		fail "rolling.yml to a broken build succeeded"
	else
		pass "rolling.yml to a broken build failed"
	fi
	# The hand-over's new process exits at once, so the old one (v2) goes
	# on serving, still drained by rolling.yml; the package says v3.
	local inst1 sv1
	inst1=$(lab_ssh 1 "dpkg-query -W -f='\${Version}' switchboard")
	sv1=$(status 1 | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["version"], "draining" if s["draining"] else "serving")')
	say "node1: package $inst1 installed; the process reports: $sv1"
	if [ "$inst1" = $V3 ] && [ "$sv1" = "$V2 draining" ]; then
		pass "node1: the broken build did not start; the old process serves $V2, out of health checks"
	else
		fail "node1: installed '$inst1', process '$sv1' (want $V3 installed, $V2 draining)"
	fi
	lab_ssh 1 "journalctl -u switchboard --no-pager | grep -m2 -i 'broken\|hand-over'" | sed 's/^/    /'
	for i in 2 3; do
		local inst sv
		inst=$(lab_ssh "$i" "dpkg-query -W -f='\${Version}' switchboard")
		sv=$(status "$i" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
		if [ "$inst" = $V2 ] && [ "$sv" = $V2 ] && curl -fsS -m 2 "http://$(node_ip "$i"):8025/healthz" >/dev/null; then
			pass "node$i untouched: $V2 installed, serving, healthy"
		else
			fail "node$i: installed '$inst', serving '$sv'"
		fi
	done
}

# step_hardening looks at the running service on node2 from inside.
step_hardening() {
	say "step 4: the unit's sandbox on node2"
	local out
	out=$(lab_ssh 2 'bash -s' <<-'EOF'
		pid=$(systemctl show -p MainPID --value switchboard)
		systemctl show switchboard -p User -p ProtectSystem -p ProtectHome -p NoNewPrivileges \
			-p CapabilityBoundingSet -p AmbientCapabilities -p PrivateTmp -p RestrictNamespaces -p MemoryDenyWriteExecute
		echo "Uid=$(awk '/^Uid:/{print $2}' /proc/$pid/status) switchboard=$(id -u switchboard)"
		grep -E '^(CapEff|CapAmb|NoNewPrivs|Seccomp):' /proc/$pid/status | tr -d '\t' | tr ':' '='
		echo "RootMount=$(awk '$5=="/"{print $6}' /proc/$pid/mountinfo | cut -d, -f1 | head -1)"
		echo "WriteUsr=$(nsenter -t $pid -m sh -c 'touch /usr/sblab-test' 2>&1 | sed 's/.*: //')"
		echo "WriteEtc=$(nsenter -t $pid -m sh -c 'touch /etc/switchboard/sblab-test' 2>&1 | sed 's/.*: //')"
		echo "HomeEntries=$(ls -A /root | wc -l)/$(nsenter -t $pid -m ls -A /root 2>/dev/null | wc -l)"
		echo "Exposure=$(systemd-analyze security switchboard 2>/dev/null | tail -1 | awk '{print $(NF-2), $(NF-1), $NF}')"
	EOF
	)
	echo "$out" | sed 's/^/    /'
	expect() { # expect KEY VALUE-REGEX
		local got
		got=$(echo "$out" | sed -n "s/^$1=//p" | head -1)
		if echo "$got" | grep -Eq "^($2)\$"; then pass "$1 = $got"; else fail "$1 = '$got' (want $2)"; fi
	}
	expect User switchboard
	expect ProtectSystem strict
	expect ProtectHome yes
	expect NoNewPrivileges yes
	expect CapabilityBoundingSet cap_net_bind_service
	expect NoNewPrivs 1
	expect Seccomp 2
	expect CapEff 0000000000000400
	expect RootMount ro
	expect WriteUsr 'Read-only file system'
	expect WriteEtc 'Read-only file system'
	expect HomeEntries '[1-9][0-9]*/0' # /root has .ssh; the service sees it empty
	local uid
	uid=$(echo "$out" | sed -n 's/^Uid=\([0-9]*\) switchboard=\([0-9]*\)$/\1 \2/p')
	set -- $uid
	[ -n "${1:-}" ] && [ "$1" = "${2:-}" ] && [ "$1" != 0 ] && pass "the process runs as uid $1 (switchboard)" || fail "process uid: '$uid'"
}

# step_dovecot applies the dovecot_backend role to node3 (its image has
# Dovecot installed but disabled) and checks what Dovecot then runs with.
step_dovecot() {
	say "step 5: the dovecot_backend role on node3"
	if play dovecot1 dovecot.yml; then pass "dovecot.yml applied"; else fail "dovecot.yml"; return; fi
	local want got greet c
	want="$(node_ip 1)/32 $(node_ip 2)/32 $(node_ip 3)/32"
	got=$(lab_ssh 3 doveconf -h login_trusted_networks)
	[ "$got" = "$want" ] && pass "Dovecot trusts the three nodes: $got" || fail "login_trusted_networks = '$got' (want $want)"
	greet=$(lab_ssh 3 "timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/10143; head -1 <&3'" | tr -d '\r')
	case "$greet" in "* OK"*) pass "Dovecot answers on node3: $greet" ;; *) fail "Dovecot greeting on node3: '$greet'" ;; esac
	play dovecot2 dovecot.yml || fail "second dovecot.yml"
	c=$(changed_total dovecot2)
	[ "$c" = 0 ] && pass "second dovecot.yml: changed=0" || fail "second dovecot.yml: changed=$c"
}

# ------------------------------------------------------------------- main

run() {
	mkdir -p "$LAB"
	preflight
	trap down EXIT
	down
	say "image: $ROOTFS"
	"$here/rootfs.sh" "$ROOTFS" || die "rootfs"
	say "fixtures"
	fixtures
	net_up
	backends_up
	say "slapd and the backends are up"
	nodes_up
	inventory
	step_converge
	step_rolling
	step_broken
	step_hardening
	step_dovecot
	say "$passed passed, $failed failed ($(($(date +%s) - t0)) s)"
	[ "$failed" = 0 ]
}

case "${1:-run}" in
run) run ;;
down) down ;;
*) echo "usage: $0 [run|down]" >&2; exit 2 ;;
esac
