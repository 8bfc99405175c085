package imap

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"switchboard/router/internal/wire"
)

type mapCaps map[string][]string

func (m mapCaps) Get(addr string) ([]string, bool) { c, ok := m[addr]; return c, ok }
func (m mapCaps) Put(addr string, caps []string)   { m[addr] = caps }

// TestLoginBoundsUntagged checks that a backend flooding untagged lines
// before its login answer is refused as unavailable once they pass the
// bound, instead of being buffered without end.
func TestLoginBoundsUntagged(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		br := bufio.NewReader(server)
		br.ReadString('\n') // ID
		br.ReadString('\n') // login
		line := "* OK " + strings.Repeat("x", 1000) + "\r\n"
		server.Write([]byte("sb0 OK ID completed.\r\n"))
		for range 100 {
			if _, err := io.WriteString(server, line); err != nil {
				return
			}
		}
		server.Write([]byte("a OK Logged in\r\n"))
		server.Close()
	}()
	b := &wire.Backend{
		Conn: client, W: client, R: bufio.NewReaderSize(client, 4096), Addr: "test",
		Greeting: []byte("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready"),
		Timeout:  5 * time.Second, Caps: mapCaps{}, Log: slog.New(slog.DiscardHandler),
	}
	_, err := Login(b, &wire.Creds{User: "u", Pass: "p"}, "a", &wire.Forward{})
	var ue *wire.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("Login after 100 KB of untagged lines: %v, want unavailable", err)
	}
}
