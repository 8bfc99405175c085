# Switchboard. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin
# Stamped into the binary and the Debian package (scripts/version.sh).
VERSION ?= $(shell ./scripts/version.sh)
export VERSION

.PHONY: all build deb lab-test lint-ops setup test test-short test-race check portable fuzz tidy demo bench

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

# A short run of each fuzz target.
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzReadCommand -fuzztime=30s ./router/imap/
	$(GO) test -run='^$$' -fuzz=FuzzReadCommand -fuzztime=30s ./router/pop3/
	$(GO) test -run='^$$' -fuzz=FuzzFilter -fuzztime=30s ./ldapmap/

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
