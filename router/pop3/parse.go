// Package pop3 reads the POP3 commands a client may send before it has
// logged in: CAPA (RFC 2449), STLS (RFC 2595), USER and PASS (RFC 1939),
// AUTH with an initial response (RFC 5034), QUIT. After login the router
// splices bytes without parsing them.
package pop3

import (
	"bufio"
	"bytes"
	"strings"

	"switchboard/router/internal/wire"
)

// Command is one client command.
type Command struct {
	Name string // upper case
	// Args: USER has the name; PASS has the rest of the line (passwords
	// may hold spaces); AUTH has the mechanism and, when sent, the
	// initial response ("=" is an empty one). Others have none.
	Args []string
}

// ParseError is a command the client got wrong; it is answered "-ERR
// Text". Fatal errors close the connection.
type ParseError struct {
	Text  string
	Fatal bool
}

func (e *ParseError) Error() string { return "pop3: " + e.Text }

// ReadCommand reads one command line from br. Lines longer than br's
// buffer are refused (RFC 2449 section 4 caps them at 255 octets; clients
// with long AUTH responses need more, so the limit is the buffer's).
func ReadCommand(br *bufio.Reader) (*Command, error) {
	line, err := wire.ReadLine(br)
	if err == wire.ErrLineTooLong {
		return nil, &ParseError{Text: "Command line too long.", Fatal: true}
	}
	if err != nil {
		return nil, err
	}
	if bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, 0) >= 0 {
		return nil, &ParseError{Text: "Invalid characters in command."}
	}
	name, rest, hasArgs := bytes.Cut(line, []byte{' '})
	if len(name) == 0 || len(name) > 8 {
		return nil, &ParseError{Text: "Unknown command."}
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f {
			return nil, &ParseError{Text: "Unknown command."}
		}
	}
	cmd := &Command{Name: strings.ToUpper(string(name))}
	switch cmd.Name {
	case "CAPA", "STLS", "QUIT", "NOOP":
		if hasArgs {
			return nil, &ParseError{Text: cmd.Name + " takes no arguments."}
		}
	case "USER":
		if !hasArgs || len(rest) == 0 || bytes.IndexByte(rest, ' ') >= 0 {
			return nil, &ParseError{Text: "USER expects one user name."}
		}
		cmd.Args = []string{string(rest)}
	case "PASS":
		if !hasArgs || len(rest) == 0 {
			return nil, &ParseError{Text: "PASS expects a password."}
		}
		cmd.Args = []string{string(rest)}
	case "AUTH":
		if !hasArgs {
			return cmd, nil // list mechanisms
		}
		f := wire.Fields(make([][]byte, 0, 3), rest, 3)
		if len(f) > 2 || len(f[0]) == 0 || (len(f) == 2 && len(f[1]) == 0) {
			return nil, &ParseError{Text: "AUTH expects a mechanism and an optional initial response."}
		}
		cmd.Args = append(cmd.Args, strings.ToUpper(string(f[0])))
		if len(f) == 2 {
			cmd.Args = append(cmd.Args, string(f[1]))
		}
	}
	return cmd, nil
}
