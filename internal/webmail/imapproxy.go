package webmail

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"switchboard/internal/testbed"
)

// up-imapproxy's defaults and the harness's timeouts.
const (
	defaultImapproxyBinary   = "/usr/sbin/imapproxyd"
	defaultImapproxyCache    = 3072             // cache_size: connection slots
	defaultImapproxyExpiry   = 300              // cache_expiration_time, seconds
	processReadyTimeout      = 15 * time.Second // a started process must greet by then
	processReadyPollInterval = 25 * time.Millisecond
	processStopGrace         = 5 * time.Second // SIGTERM to SIGKILL
	greetingTimeout          = time.Second
)

// ImapproxyOptions configures StartImapproxy.
type ImapproxyOptions struct {
	// Binary is imapproxyd. Default /usr/sbin/imapproxyd (Debian package
	// imapproxy).
	Binary string
	// Dir holds the configuration, statistics file and output. Required.
	Dir string
	// Backend is the IMAP server's plaintext "ip:port". Required.
	Backend string
	// IP is the loopback address to listen on. Default: a new
	// testbed.AllocIP().
	IP string
	// CacheExpiry is cache_expiration_time. Default 300 s.
	CacheExpiry time.Duration
}

// Imapproxy is a running up-imapproxy in the foreground.
type Imapproxy struct {
	// Addr is the "ip:port" clients connect to.
	Addr string
	// OutPath is the file holding its stdout and stderr.
	OutPath string

	cmd   *exec.Cmd
	donec chan struct{}
}

// StartImapproxy writes a configuration for one backend and starts
// imapproxyd in the foreground, in its own process group, and waits until
// it greets.
func StartImapproxy(opts ImapproxyOptions) (*Imapproxy, error) {
	if opts.Dir == "" || opts.Backend == "" {
		return nil, errors.New("webmail: ImapproxyOptions.Dir and Backend are required")
	}
	bin := opts.Binary
	if bin == "" {
		bin = defaultImapproxyBinary
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("webmail: up-imapproxy (Debian package imapproxy): %w", err)
	}
	if opts.IP == "" {
		opts.IP = testbed.AllocIP()
	}
	expiry := defaultImapproxyExpiry
	if opts.CacheExpiry > 0 {
		expiry = int(opts.CacheExpiry / time.Second)
	}
	bhost, bport, err := net.SplitHostPort(opts.Backend)
	if err != nil {
		return nil, fmt.Errorf("webmail: imapproxy backend: %w", err)
	}
	port, err := testbed.FreePort(opts.IP)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("webmail: imapproxy dir: %w", err)
	}
	// imapproxyd drops to nobody after binding; its statistics file is
	// created before that.
	conf := fmt.Sprintf(`server_hostname %s
server_port %s
listen_address %s
listen_port %d
cache_size %d
cache_expiration_time %d
proc_username nobody
proc_groupname nogroup
stat_filename %s
protocol_log_filename %s
syslog_facility LOG_MAIL
send_tcp_keepalives no
enable_select_cache no
foreground_mode yes
force_tls no
enable_admin_commands no
`, bhost, bport, opts.IP, port, defaultImapproxyCache, expiry,
		filepath.Join(opts.Dir, "pimpstats"), filepath.Join(opts.Dir, "protocol.log"))
	confPath := filepath.Join(opts.Dir, "imapproxy.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("webmail: write imapproxy.conf: %w", err)
	}
	p := &Imapproxy{
		Addr:    net.JoinHostPort(opts.IP, strconv.Itoa(port)),
		OutPath: filepath.Join(opts.Dir, "imapproxy.out"),
		donec:   make(chan struct{}),
	}
	out, err := os.OpenFile(p.OutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("webmail: imapproxy output: %w", err)
	}
	defer out.Close()
	p.cmd = exec.Command(bin, "-f", confPath, "-p", filepath.Join(opts.Dir, "imapproxy.pid"))
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = testbed.ChildAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("webmail: start imapproxyd: %w", err)
	}
	go waitProcess(p.cmd, p.donec)
	if err := waitGreeting(p.Addr, p.donec); err != nil {
		p.Stop()
		return nil, fmt.Errorf("webmail: imapproxyd: %w; output: %s", err, readTail(p.OutPath))
	}
	return p, nil
}

// Stop ends imapproxyd's process group.
func (p *Imapproxy) Stop() error {
	return stopGroup(p.cmd, p.donec)
}

// waitProcess reaps cmd and closes donec.
func waitProcess(cmd *exec.Cmd, donec chan<- struct{}) {
	cmd.Wait()
	close(donec)
}

// stopGroup sends SIGTERM to cmd's process group, SIGKILL after a grace
// period, and waits.
func stopGroup(cmd *exec.Cmd, donec <-chan struct{}) error {
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("webmail: stop %s: %w", filepath.Base(cmd.Path), err)
	}
	select {
	case <-donec:
	case <-time.After(processStopGrace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-donec
	}
	syscall.Kill(-pgid, syscall.SIGKILL) // helpers left in the group
	return nil
}

// waitGreeting polls addr until it sends an IMAP "* OK" greeting, the
// process ends, or processReadyTimeout passes.
func waitGreeting(addr string, donec <-chan struct{}) error {
	deadline := time.Now().Add(processReadyTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-donec:
			return errors.New("exited at start")
		default:
		}
		if last = probeGreeting(addr); last == nil {
			return nil
		}
		time.Sleep(processReadyPollInterval)
	}
	return fmt.Errorf("no greeting on %s within %v: %w", addr, processReadyTimeout, last)
}

// probeGreeting connects to addr and reads one "* OK" line.
func probeGreeting(addr string) error {
	c, err := net.DialTimeout("tcp", addr, greetingTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(greetingTimeout)); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "* OK") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	c.Write([]byte("z LOGOUT\r\n"))
	return nil
}

// readTail returns the last few KiB of a file for an error message.
func readTail(path string) string {
	const tailBytes = 4096
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(data) > tailBytes {
		data = data[len(data)-tailBytes:]
	}
	return strings.TrimSpace(string(data))
}
