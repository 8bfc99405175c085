# Switchboard. `make demo` and `make test` are the README's two commands.
GO ?= go
BIN := bin

.PHONY: all build setup test test-short test-race check portable fuzz tidy demo bench bench-move

all: build

build:
	$(GO) build -o $(BIN)/switchboard ./cmd/switchboard

setup:
	./scripts/setup.sh

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

# Five moves of a 2,000-message mailbox between two real Dovecots under
# load (LMTP every 50 ms, an IDLE client, a client changing flags and
# moving messages); prints one table row per run (docs/moving-a-mailbox.md).
bench-move: setup
	SWITCHBOARD_BENCH_MOVE=$${RUNS:-5} $(GO) test -count=1 -v -run '^TestBenchMove$$' -timeout 30m ./cmd/switchboard/ | grep -E '^\s+move_integration_test.go:[0-9]+: \||^(---|ok|FAIL|PASS)'
