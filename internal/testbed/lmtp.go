package testbed

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"time"
)

// lmtpTimeout bounds one delivery over LMTP, connection to last reply.
const lmtpTimeout = 30 * time.Second

// LMTPError is a reply of an LMTP server other than success.
type LMTPError struct {
	Code int    // 4xx: try again later; 5xx: refused
	Line string // the reply line
}

func (e *LMTPError) Error() string { return fmt.Sprintf("lmtp: %d %s", e.Code, e.Line) }

// Temporary reports whether the server asked to try again later (4xx).
func (e *LMTPError) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// DeliverLMTP delivers msg (RFC 5322, CRLF line endings) to rcpt over the
// instance's LMTP listener (RFC 2033), as an MTA does; it needs
// DovecotOptions.LMTP. A reply other than 2xx is an *LMTPError.
func (d *Dovecot) DeliverLMTP(from, rcpt string, msg []byte) error {
	if d.LMTPAddr == "" {
		return fmt.Errorf("testbed: dovecot %s has no LMTP listener", d.Name)
	}
	return DeliverLMTP(d.LMTPAddr, from, rcpt, msg)
}

// DeliverLMTP delivers msg to rcpt through the LMTP server at addr.
func DeliverLMTP(addr, from, rcpt string, msg []byte) error {
	conn, err := net.DialTimeout("tcp", addr, lmtpTimeout)
	if err != nil {
		return fmt.Errorf("testbed: lmtp: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(lmtpTimeout)); err != nil {
		return fmt.Errorf("testbed: lmtp: %w", err)
	}
	tp := textproto.NewConn(conn)
	steps := []struct {
		cmd  string
		want int
	}{
		{"", 220},
		{"LHLO testbed.invalid", 250},
		{"MAIL FROM:<" + from + ">", 250},
		{"RCPT TO:<" + rcpt + ">", 250},
		{"DATA", 354},
	}
	for _, s := range steps {
		if s.cmd != "" {
			if err := tp.PrintfLine("%s", s.cmd); err != nil {
				return fmt.Errorf("testbed: lmtp: %w", err)
			}
		}
		if err := lmtpReply(tp.Reader.R, s.want); err != nil {
			return err
		}
	}
	w := tp.DotWriter()
	// DotWriter wants \n line endings and writes CRLF itself.
	if _, err := w.Write(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))); err != nil {
		return fmt.Errorf("testbed: lmtp: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("testbed: lmtp: %w", err)
	}
	// One reply per accepted recipient (RFC 2033 section 4.2): one here.
	if err := lmtpReply(tp.Reader.R, 250); err != nil {
		return err
	}
	_ = tp.PrintfLine("QUIT")
	return nil
}

// lmtpReply reads one (possibly multi-line) reply and checks its class
// against want.
func lmtpReply(r *bufio.Reader, want int) error {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return fmt.Errorf("testbed: lmtp: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		var code int
		if len(line) < 3 {
			return fmt.Errorf("testbed: lmtp: short reply %q", line)
		}
		if _, err := fmt.Sscanf(line[:3], "%d", &code); err != nil {
			return fmt.Errorf("testbed: lmtp: bad reply %q", line)
		}
		if len(line) > 3 && line[3] == '-' {
			continue
		}
		if code/100 != want/100 {
			return &LMTPError{Code: code, Line: line}
		}
		return nil
	}
}
