package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Timeouts of the tiny client. A session that takes longer than
// sessionTimeout counts as an error, not as a latency sample.
const (
	dialTimeout    = 10 * time.Second
	sessionTimeout = 30 * time.Second
	// maxLineBytes bounds one response line (without literals). ENVELOPE
	// lines of the seeded messages are well under 2 KiB.
	maxLineBytes = 64 << 10
)

// Conn is a minimal IMAP and POP3 client: lines in and out through bufio,
// literals and multi-line bodies counted and thrown away. It is the same
// code for every target, so its own cost cancels out in the ratios.
type Conn struct {
	nc   net.Conn
	stop func() bool // undoes CloseOnDone
	tc   *tls.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	tag  int
	line []byte
	// Body counts literal (IMAP) or multi-line (POP3) bytes received.
	Body int64
}

var errProto = errors.New("loadgen: unexpected response")

// Dial connects to addr. With TLSImplicit the TLS handshake runs at once;
// with TLSStartTLS the caller upgrades after the greeting with StartTLS.
func Dial(ctx context.Context, addr string, mode TLSMode, cfg *tls.Config) (*Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	c := &Conn{nc: nc}
	if dl, ok := ctx.Deadline(); ok {
		if err := nc.SetDeadline(dl); err != nil {
			nc.Close()
			return nil, err
		}
	}
	if mode == TLSImplicit {
		if err := c.handshake(ctx, cfg); err != nil {
			nc.Close()
			return nil, err
		}
	} else {
		c.br = bufio.NewReaderSize(nc, 4096)
		c.bw = bufio.NewWriterSize(nc, 1024)
	}
	return c, nil
}

func (c *Conn) handshake(ctx context.Context, cfg *tls.Config) error {
	if c.br != nil && c.br.Buffered() > 0 {
		return fmt.Errorf("%w: data after STARTTLS response", errProto)
	}
	c.tc = tls.Client(c.nc, cfg)
	if err := c.tc.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("tls handshake: %w", err)
	}
	c.br = bufio.NewReaderSize(c.tc, 4096)
	c.bw = bufio.NewWriterSize(c.tc, 1024)
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error {
	if c.stop != nil {
		c.stop()
	}
	return c.nc.Close()
}

// CloseOnDone closes the connection when ctx is done, so that a session
// in flight at the end of a measurement window is abandoned at once.
func (c *Conn) CloseOnDone(ctx context.Context) {
	c.stop = context.AfterFunc(ctx, func() { c.nc.Close() })
}

// SetDeadline sets the deadline of the underlying connection.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// readLine returns the next line without CRLF. The slice is valid until the
// next read.
func (c *Conn) readLine() ([]byte, error) {
	c.line = c.line[:0]
	for {
		b, err := c.br.ReadSlice('\n')
		c.line = append(c.line, b...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(c.line) > maxLineBytes {
			return nil, fmt.Errorf("%w: line over %d bytes", errProto, maxLineBytes)
		}
	}
	return bytes.TrimRight(c.line, "\r\n"), nil
}

func (c *Conn) send(parts ...string) error {
	for _, p := range parts {
		c.bw.WriteString(p)
	}
	c.bw.WriteString("\r\n")
	return c.bw.Flush()
}

// literalSize returns n if line ends in an IMAP literal announcement {n}.
func literalSize(line []byte) (int64, bool) {
	if len(line) < 3 || line[len(line)-1] != '}' {
		return 0, false
	}
	i := bytes.LastIndexByte(line, '{')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(bytes.TrimSuffix(line[i+1:len(line)-1], []byte("+"))), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// IMAPGreeting reads the server greeting.
func (c *Conn) IMAPGreeting() error {
	l, err := c.readLine()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !bytes.HasPrefix(l, []byte("* OK")) {
		return fmt.Errorf("%w: greeting %.60q", errProto, l)
	}
	return nil
}

// IMAP sends one tagged command and reads through its tagged completion,
// discarding untagged data and counting literal bytes in c.Body. It fails
// unless the completion is OK.
func (c *Conn) IMAP(cmd ...string) error {
	c.tag++
	tag := "a" + strconv.Itoa(c.tag)
	parts := append([]string{tag, " "}, cmd...)
	if err := c.send(parts...); err != nil {
		return err
	}
	return c.imapWait(tag, cmd[0])
}

func (c *Conn) imapWait(tag, what string) error {
	for {
		l, err := c.readLine()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		// A line may carry several literals; each is followed by the
		// rest of the line.
		for {
			n, ok := literalSize(l)
			if !ok {
				break
			}
			if _, err := io.CopyN(io.Discard, c.br, n); err != nil {
				return fmt.Errorf("%s: literal: %w", what, err)
			}
			c.Body += n
			if l, err = c.readLine(); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		if len(l) > len(tag) && l[len(tag)] == ' ' && string(l[:len(tag)]) == tag {
			if bytes.HasPrefix(l[len(tag)+1:], []byte("OK")) {
				return nil
			}
			return fmt.Errorf("%w: %s: %.80q", errProto, what, l)
		}
	}
}

// IMAPStartTLS issues STARTTLS and runs the handshake.
func (c *Conn) IMAPStartTLS(ctx context.Context, cfg *tls.Config) error {
	if err := c.IMAP("STARTTLS"); err != nil {
		return err
	}
	return c.handshake(ctx, cfg)
}

// IMAPLogin logs in with LOGIN and two quoted strings.
func (c *Conn) IMAPLogin(user, pass string) error {
	return c.IMAP("LOGIN ", quote(user), " ", quote(pass))
}

// IMAPIdle starts IDLE and waits for the continuation request.
func (c *Conn) IMAPIdle() error {
	c.tag++
	if err := c.send("a", strconv.Itoa(c.tag), " IDLE"); err != nil {
		return err
	}
	for {
		l, err := c.readLine()
		if err != nil {
			return fmt.Errorf("IDLE: %w", err)
		}
		if bytes.HasPrefix(l, []byte("+")) {
			return nil
		}
		if !bytes.HasPrefix(l, []byte("* ")) {
			return fmt.Errorf("%w: IDLE: %.80q", errProto, l)
		}
	}
}

// IMAPLogout sends LOGOUT and waits for its completion.
func (c *Conn) IMAPLogout() error { return c.IMAP("LOGOUT") }

func quote(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return string(append(b, '"'))
}

// POP3Greeting reads the server greeting.
func (c *Conn) POP3Greeting() error { return c.pop3Status("greeting") }

func (c *Conn) pop3Status(what string) error {
	l, err := c.readLine()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !bytes.HasPrefix(l, []byte("+OK")) {
		return fmt.Errorf("%w: %s: %.80q", errProto, what, l)
	}
	return nil
}

// POP3 sends one command and reads its status line.
func (c *Conn) POP3(cmd ...string) error {
	if err := c.send(cmd...); err != nil {
		return err
	}
	return c.pop3Status(cmd[0])
}

// POP3Multi sends one command and reads its status line and the multi-line
// body up to the terminating ".", counting body bytes in c.Body.
func (c *Conn) POP3Multi(cmd ...string) error {
	if err := c.POP3(cmd...); err != nil {
		return err
	}
	for {
		l, err := c.readLine()
		if err != nil {
			return fmt.Errorf("%s: %w", cmd[0], err)
		}
		if len(l) == 1 && l[0] == '.' {
			return nil
		}
		c.Body += int64(len(l)) + 2
	}
}

// POP3StartTLS issues STLS and runs the handshake.
func (c *Conn) POP3StartTLS(ctx context.Context, cfg *tls.Config) error {
	if err := c.POP3("STLS"); err != nil {
		return err
	}
	return c.handshake(ctx, cfg)
}
