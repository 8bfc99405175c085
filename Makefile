# Switchboard. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin
# Stamped into the binary and the Debian package (scripts/version.sh).
VERSION ?= $(shell ./scripts/version.sh)
export VERSION

.PHONY: all build deb lab-test lint-ops setup test test-short test-race check portable fuzz fuzz-long tidy demo bench bench-move bench-webmail

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/switchboard ./cmd/switchboard

# bin/switchboard_<version>_amd64.deb: binary, units, example configuration
# (scripts/mkdeb.sh, docs/install.md).
deb:
	GO=$(GO) ./scripts/mkdeb.sh $(BIN)

setup:
	./scripts/setup.sh

# Three real systemd hosts (netns + systemd-nspawn), slapd and two Dovecots:
# site.yml, a rolling upgrade under a client loop, a broken build, the
# unit's sandbox (ansible/lab/lab.sh; as root; about 8-12 minutes).
lab-test:
	./ansible/lab/lab.sh run

# ansible-lint over ansible/, promtool over the alert rules.
lint-ops:
	./scripts/setup.sh --lab
	cd ansible && ansible-lint --offline site.yml rolling.yml dovecot.yml roles
	promtool check rules dist/prometheus/alerts.yml

# Every test: unit tests and the integration tests against real slapd and
# Dovecot that the harness starts on loopback addresses.
test: setup tidy portable
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) test -count=1 -shuffle=on -timeout 30m ./...

# Unit tests only (integration tests skip themselves with -short).
test-short:
	$(GO) test -short ./...

test-race: setup
	$(GO) test -race -count=1 -timeout 30m ./...

check:
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || (gofmt -l .; exit 1)

# The tree builds on other systems too (Linux has the fast path: raw I/O,
# splice(2), the parker; the others copy through buffers).
portable:
	GOOS=darwin $(GO) build ./...
	GOOS=freebsd $(GO) build ./...

# Every fuzz target, as package:target: each pre-login parser and decoder
# (IMAP and POP3 command readers, SASL PLAIN, the PROXY protocol header),
# the IMAP follower, the LDAP filter builder, the config key scanner and
# the gossip decoder. docs/security.md has the executions each reached.
FUZZ_TARGETS := \
	./router/imap:FuzzReadCommand \
	./router/imap:FuzzFollower \
	./router/pop3:FuzzReadCommand \
	./router/internal/wire:FuzzDecodePlain \
	./router:FuzzProxyHeader \
	./config:FuzzScanKeys \
	./ldapmap:FuzzFilter \
	./cluster:FuzzDecode

# How long each target runs: a duration ("30s", "10m") or a count of
# executions ("10000000x").
FUZZTIME ?= 30s

# Runs each fuzz target in turn for FUZZTIME; stops at the first crash,
# which go test writes to the package's testdata/fuzz.
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

# The long run behind the figures in docs/security.md: 10 minutes per
# target (FUZZTIME=10000000x runs each to ten million executions instead).
fuzz-long:
	$(MAKE) fuzz FUZZTIME=10m

# Fails, printing the difference, when go.mod or go.sum is not tidy.
tidy:
	$(GO) mod tidy -diff

# slapd, two Dovecot backends and Switchboard in front of them, on
# loopback; shows a routed login, then stays up until Ctrl-C.
demo: setup build
	$(GO) run ./cmd/sbdemo -switchboard $(BIN)/switchboard

bench: build
	./scripts/setup.sh --bench
	./bench/run.sh

# Five moves of a 2,000-message mailbox between two real Dovecots under
# load (LMTP every 50 ms, an IDLE client, a client changing flags and
# moving messages); prints one table row per run (docs/moving-a-mailbox.md).
bench-move: setup
	SWITCHBOARD_BENCH_MOVE=$${RUNS:-5} $(GO) test -count=1 -v -run '^TestBenchMove$$' -timeout 30m ./cmd/switchboard/ | grep -E '^\s+move_integration_test.go:[0-9]+: \||^(---|ok|FAIL|PASS)'

# Roundcube in headless Chromium through the scenario, direct, through
# Switchboard's webmail cache and through up-imapproxy (docs/performance.md,
# "Webmail cache"). K=5 paired repetitions by default.
K ?= 5
bench-webmail: build
	./scripts/setup.sh --webmail
	$(GO) run ./bench/webmail -k $(K) -switchboard $(BIN)/switchboard -screenshot docs/webmail-inbox.png
