package webmail

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Driver defaults.
const (
	defaultPHP        = "php"
	defaultLibDir     = "/usr/share/roundcube/program/lib/Roundcube"
	maxDriverLineSize = 1 << 20 // one JSON line of rcdriver.php
)

//go:embed rcdriver.php
var driverScript []byte

// Auth methods for Target.Auth (Roundcube's imap_auth_type).
const (
	// AuthCheck lets the library choose, as Roundcube does by default:
	// AUTHENTICATE PLAIN (with SASL-IR when the server offers it) if
	// offered, else LOGIN.
	AuthCheck = "CHECK"
	// AuthLogin forces the LOGIN command.
	AuthLogin = "LOGIN"
	// AuthPlain forces AUTHENTICATE PLAIN.
	AuthPlain = "PLAIN"
)

// Driver runs rcdriver.php with php-cli. The zero value works when php
// and roundcube-core are installed.
type Driver struct {
	// PHP is the php-cli binary. Default "php" from PATH.
	PHP string
	// LibDir is Roundcube's library directory (rcube_imap_generic.php).
	// Default /usr/share/roundcube/program/lib/Roundcube.
	LibDir string

	once   sync.Once
	script string // path of the extracted rcdriver.php
	err    error
}

// Target is what one Run connects to and as whom.
type Target struct {
	// Addr is "host:port" of a plaintext IMAP listener.
	Addr string
	// User and Password log in. Password goes to php on its stdin.
	User     string
	Password string
	// Auth is AuthCheck (default), AuthLogin or AuthPlain.
	Auth string
}

// Message is one message whose headers an iteration fetched.
type Message struct {
	UID     int    `json:"uid"`
	Subject string `json:"subject"`
}

// Iteration is one page request as rcdriver.php reports it.
type Iteration struct {
	I  int  `json:"i"`
	OK bool `json:"ok"`
	// LoginMS is TCP connect, greeting and login, in milliseconds; zero
	// when the login failed.
	LoginMS float64 `json:"login_ms"`
	// TotalMS is the whole request, in milliseconds.
	TotalMS float64 `json:"total_ms"`
	// Commands is the number of tagged commands the library sent,
	// LOGOUT and any CAPABILITY included.
	Commands int `json:"commands"`
	// Capabilities are what the library believed after login.
	Capabilities []string `json:"caps"`
	// Folders is how many folders the folder list returned.
	Folders int `json:"folders"`
	// Messages are the last few messages of INBOX, by UID.
	Messages []Message `json:"messages"`
	// BodyBytes is the size of the one body fetched.
	BodyBytes int `json:"body_bytes"`
	// Classes are the Roundcube classes php loaded (the bootstrap needed).
	Classes []string `json:"classes"`
	// Errors are the library's errors, in order.
	Errors []string `json:"errors"`
}

// HasCapability reports whether name is among it.Capabilities.
func (it Iteration) HasCapability(name string) bool {
	for _, c := range it.Capabilities {
		if strings.EqualFold(c, name) {
			return true
		}
	}
	return false
}

// php returns the php-cli binary.
func (d *Driver) php() string {
	if d.PHP == "" {
		return defaultPHP
	}
	return d.PHP
}

// libDir returns Roundcube's library directory.
func (d *Driver) libDir() string {
	if d.LibDir == "" {
		return defaultLibDir
	}
	return d.LibDir
}

// Check reports whether php-cli and rcube_imap_generic are installed.
func (d *Driver) Check() error {
	if _, err := exec.LookPath(d.php()); err != nil {
		return fmt.Errorf("webmail: php-cli (Debian package php-cli): %w", err)
	}
	if _, err := os.Stat(filepath.Join(d.libDir(), "rcube_imap_generic.php")); err != nil {
		return fmt.Errorf("webmail: Roundcube's IMAP library (Debian package roundcube-core): %w", err)
	}
	return nil
}

// scriptPath writes the embedded rcdriver.php to a temporary file once.
func (d *Driver) scriptPath() (string, error) {
	d.once.Do(func() {
		f, err := os.CreateTemp("", "rcdriver-*.php")
		if err != nil {
			d.err = fmt.Errorf("webmail: write rcdriver.php: %w", err)
			return
		}
		defer f.Close()
		if _, err := f.Write(driverScript); err != nil {
			d.err = fmt.Errorf("webmail: write rcdriver.php: %w", err)
			return
		}
		d.script = f.Name()
	})
	return d.script, d.err
}

// Close removes the extracted script.
func (d *Driver) Close() error {
	if d.script == "" {
		return nil
	}
	return os.Remove(d.script)
}

// Run makes n page requests against t, one after the other, in one php
// process, and returns them in order. An iteration that failed is
// returned with its Errors; err is about running php itself.
func (d *Driver) Run(ctx context.Context, t Target, n int) ([]Iteration, error) {
	script, err := d.scriptPath()
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil {
		return nil, fmt.Errorf("webmail: target address: %w", err)
	}
	auth := t.Auth
	if auth == "" {
		auth = AuthCheck
	}
	cmd := exec.CommandContext(ctx, d.php(), script, host, port, t.User, fmt.Sprint(n), auth)
	cmd.Env = append(os.Environ(), "RCDRIVER_LIB="+d.libDir())
	cmd.Stdin = strings.NewReader(t.Password + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	its, perr := parseIterations(out)
	if err != nil {
		return its, fmt.Errorf("webmail: php rcdriver.php: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return its, perr
	}
	if len(its) != n {
		return its, fmt.Errorf("webmail: rcdriver.php printed %d iterations, want %d: %s", len(its), n, strings.TrimSpace(stderr.String()))
	}
	return its, nil
}

// parseIterations decodes rcdriver.php's JSON lines.
func parseIterations(out []byte) ([]Iteration, error) {
	var its []Iteration
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), maxDriverLineSize)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var it Iteration
		if err := json.Unmarshal(line, &it); err != nil {
			return its, fmt.Errorf("webmail: rcdriver.php output %q: %w", truncate(line, 200), err)
		}
		its = append(its, it)
	}
	if err := sc.Err(); err != nil {
		return its, fmt.Errorf("webmail: read rcdriver.php output: %w", err)
	}
	if len(its) == 0 {
		return nil, errors.New("webmail: rcdriver.php printed nothing")
	}
	return its, nil
}

// truncate shortens b for an error message.
func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…"
}
