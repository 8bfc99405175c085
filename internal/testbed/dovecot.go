package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"
)

// Dovecot defaults, sized so one instance can be the benchmark's sink.
const (
	defaultProcessLimit = 5000  // process_limit of imap and pop3
	defaultClientLimit  = 10000 // default_client_limit and login client_limit
	loginProcesses      = 2     // process_min_avail for logins and mail processes
	maxNoFile           = 20000 // RLIMIT_NOFILE wanted for the Dovecot master
	dovecotDHFile       = "/usr/share/dovecot/dh.pem"
)

// DovecotOptions configures StartDovecot.
type DovecotOptions struct {
	// Name identifies the instance in its greeting ("* OK Dovecot mx1
	// ready."), its process titles, certificate and messages.
	// Default "dovecot".
	Name string
	// Dir holds the configuration, passwd-file, mail, state and logs.
	// Required; created if missing. The mail user must be able to reach
	// it (see the package documentation).
	Dir string
	// IP is the loopback address of all four listeners. Default: AllocIP().
	IP string
	// CA issues the server certificate. Default: a new CA in Dir/ca.
	CA *CA
	// Users are written to the passwd-file (passdb and userdb).
	Users []User
	// TrustedNetworks is login_trusted_networks: clients connecting from
	// these networks may forward the original client address (IMAP ID
	// x-originating-ip, POP3 XCLIENT). Nil means 127.0.0.0/8; an empty,
	// non-nil slice trusts nobody.
	TrustedNetworks []string
	// HibernateTimeout is imap_hibernate_timeout, rounded up to seconds:
	// how long an IDLE session stays in its imap process before it moves
	// to imap-hibernate. Zero disables hibernation.
	HibernateTimeout time.Duration
	// ProcessLimit is the process_limit of the imap and of the pop3
	// service, i.e. how many sessions each can hold outside hibernation.
	// Default 5000.
	ProcessLimit int
	// ClientLimit is default_client_limit, the login processes'
	// client_limit and mail_max_userip_connections. Default 10000.
	ClientLimit int
	// Debug turns on auth_debug, mail_debug and verbose_ssl.
	Debug bool
	// ExtraConf is appended to the generated dovecot.conf. A setting
	// repeated there overrides the generated one.
	ExtraConf string
}

// Dovecot is a running (or stopped) Dovecot instance serving IMAP, IMAPS,
// POP3 and POP3S on one loopback address. Its users live in a passwd-file
// ({SSHA256} passwords) and all their mail, under Dir/mail/<domain>/<local>
// in Maildir format, belongs to the system user "mail". Stop and Start keep
// data, addresses and ports.
//
// The instance is tuned as a cheap sink: login processes in
// high-performance mode, imap and pop3 processes reused, mail_fsync=never,
// limits in the thousands, and neither an authentication failure delay nor
// the per-IP authentication penalty (so a failed login does not slow the
// next one down).
type Dovecot struct {
	Name      string
	IP        string
	IMAPAddr  string // "IP:PORT", plaintext and STARTTLS
	IMAPSAddr string // "IP:PORT", implicit TLS
	POP3Addr  string // "IP:PORT", plaintext and STLS
	POP3SAddr string // "IP:PORT", implicit TLS
	CAFile    string // PEM file of the CA that issued the certificate
	Dir       string

	opts      DovecotOptions // defaults applied
	ports     [4]int         // imap, imaps, pop3, pop3s
	certFile  string
	keyFile   string
	conf      string
	logPath   string // log_path and info_log_path
	outPath   string // the master's stdout and stderr
	usersFile string
	mailDir   string
	mailUID   int
	mailGID   int
	authGID   int // group of default_internal_user, which reads usersFile

	mu     sync.Mutex
	proc   *child // nil while stopped
	runDir string
	users  []User // passwd-file contents, in order
	seq    int    // Maildir file name counter
}

// StartDovecot prepares an instance's directory and passwd-file, checks the
// configuration with doveconf, starts Dovecot and waits until IMAP and POP3
// answer.
func StartDovecot(opts DovecotOptions) (*Dovecot, error) {
	if opts.Dir == "" {
		return nil, errors.New("testbed: DovecotOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("testbed: dovecot dir: %w", err)
	}
	if opts.Name == "" {
		opts.Name = "dovecot"
	}
	if opts.IP == "" {
		opts.IP = AllocIP()
	}
	if opts.TrustedNetworks == nil {
		opts.TrustedNetworks = []string{"127.0.0.0/8"}
	}
	if opts.ProcessLimit <= 0 {
		opts.ProcessLimit = defaultProcessLimit
	}
	if opts.ClientLimit <= 0 {
		opts.ClientLimit = defaultClientLimit
	}
	d := &Dovecot{
		Name:      opts.Name,
		IP:        opts.IP,
		Dir:       dir,
		opts:      opts,
		conf:      filepath.Join(dir, "dovecot.conf"),
		logPath:   filepath.Join(dir, "dovecot.log"),
		outPath:   filepath.Join(dir, "dovecot.out"),
		usersFile: filepath.Join(dir, "users"),
		mailDir:   filepath.Join(dir, "mail"),
	}
	if d.mailUID, d.mailGID, err = lookupUser("mail"); err != nil {
		return nil, err
	}
	if _, d.authGID, err = lookupUser("dovecot"); err != nil {
		return nil, err
	}
	if err := d.prepareDirs(); err != nil {
		return nil, err
	}
	if opts.CA == nil {
		if opts.CA, err = NewCA(filepath.Join(dir, "ca")); err != nil {
			return nil, err
		}
	}
	d.CAFile = opts.CA.File
	if d.certFile, d.keyFile, err = opts.CA.Issue(opts.IP, opts.Name, "localhost"); err != nil {
		return nil, err
	}
	ports, err := freePorts(opts.IP, 4)
	if err != nil {
		return nil, err
	}
	copy(d.ports[:], ports)
	d.IMAPAddr = hostPort(opts.IP, ports[0])
	d.IMAPSAddr = hostPort(opts.IP, ports[1])
	d.POP3Addr = hostPort(opts.IP, ports[2])
	d.POP3SAddr = hostPort(opts.IP, ports[3])
	if err := d.AddUsers(opts.Users...); err != nil {
		return nil, err
	}
	if err := d.Start(); err != nil {
		return nil, err
	}
	return d, nil
}

// prepareDirs creates Dir (searchable by the mail and dovecot users), the
// mail directory owned by mail, and the state directory.
func (d *Dovecot) prepareDirs() error {
	if err := os.MkdirAll(d.Dir, 0o711); err != nil {
		return fmt.Errorf("testbed: create dovecot dir: %w", err)
	}
	if err := grantSearch(d.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(d.Dir, "state"), 0o700); err != nil {
		return fmt.Errorf("testbed: create dovecot state dir: %w", err)
	}
	return d.mkdirMail(d.mailDir)
}

// mkdirMail creates dir (one level) owned by the mail user, mode 0700.
func (d *Dovecot) mkdirMail(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("testbed: create %s: %w", dir, err)
	}
	if err := os.Chown(dir, d.mailUID, d.mailGID); err != nil {
		return fmt.Errorf("testbed: chown %s: %w", dir, err)
	}
	return nil
}

var dovecotConfTemplate = template.Must(template.New("dovecot.conf").Parse(`# Generated by switchboard/internal/testbed for instance {{.D.Name}}; rewritten on every Start.
instance_name = {{.D.Name}}
base_dir = {{.RunDir}}
state_dir = {{.D.Dir}}/state
protocols = imap pop3
listen = {{.D.IP}}
login_greeting = Dovecot {{.D.Name}} ready.

log_path = {{.D.LogPath}}
info_log_path = {{.D.LogPath}}
log_timestamp = "%Y-%m-%d %H:%M:%S "
auth_verbose = yes
{{- if .D.Opts.Debug}}
auth_debug = yes
mail_debug = yes
verbose_ssl = yes
{{- end}}
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{session}>
login_trusted_networks = {{.Trusted}}

auth_mechanisms = plain login
disable_plaintext_auth = no
auth_failure_delay = 0
ssl = yes
ssl_cert = <{{.D.CertFile}}
ssl_key = <{{.D.KeyFile}}
{{- if .DHFile}}
ssl_dh = <{{.DHFile}}
{{- end}}
ssl_min_protocol = TLSv1.2

first_valid_uid = {{.D.MailUID}}
first_valid_gid = {{.D.MailGID}}
mail_location = maildir:{{.D.MailDir}}/%d/%n
mail_fsync = never
imap_hibernate_timeout = {{.Hibernate}}
protocol imap {
  mail_max_userip_connections = {{.D.Opts.ClientLimit}}
}
protocol pop3 {
  mail_max_userip_connections = {{.D.Opts.ClientLimit}}
}

passdb {
  driver = passwd-file
  args = scheme=SSHA256 username_format=%u {{.D.UsersFile}}
}
userdb {
  driver = passwd-file
  args = username_format=%u {{.D.UsersFile}}
}

default_client_limit = {{.D.Opts.ClientLimit}}
default_vsz_limit = 1G

# High-performance login processes: a few long-lived ones, many clients each.
service imap-login {
  inet_listener imap {
    address = {{.D.IP}}
    port = {{index .D.Ports 0}}
  }
  inet_listener imaps {
    address = {{.D.IP}}
    port = {{index .D.Ports 1}}
    ssl = yes
  }
  service_count = 0
  process_min_avail = {{.Procs}}
  client_limit = {{.D.Opts.ClientLimit}}
}
service pop3-login {
  inet_listener pop3 {
    address = {{.D.IP}}
    port = {{index .D.Ports 2}}
  }
  inet_listener pop3s {
    address = {{.D.IP}}
    port = {{index .D.Ports 3}}
    ssl = yes
  }
  service_count = 0
  process_min_avail = {{.Procs}}
  client_limit = {{.D.Opts.ClientLimit}}
}
# One client at a time per mail process, but processes are reused (all users
# share the mail uid, which process reuse requires).
service imap {
  service_count = 0
  client_limit = 1
  process_limit = {{.D.Opts.ProcessLimit}}
  process_min_avail = {{.Procs}}
  # imap-hibernate (running as $default_internal_user) hands sessions back here.
  unix_listener imap-master {
    user = $default_internal_user
  }
}
service pop3 {
  service_count = 0
  client_limit = 1
  process_limit = {{.D.Opts.ProcessLimit}}
  process_min_avail = {{.Procs}}
}
service imap-hibernate {
  unix_listener imap-hibernate {
    mode = 0660
    group = $default_internal_group
  }
}
service auth {
  client_limit = {{.AuthClients}}
}
# No authentication penalty: tests fail logins on purpose and then log in
# again from the same (forwarded) address; they must not wait 2-15 s.
service anvil {
  client_limit = {{.AuthClients}}
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service stats {
  client_limit = {{.AuthClients}}
}
`))

// renderConf writes dovecot.conf for base_dir runDir.
func (d *Dovecot) renderConf(runDir string) error {
	dh := dovecotDHFile
	if _, err := os.Stat(dh); err != nil {
		dh = ""
	}
	hibernate := "0"
	if t := d.opts.HibernateTimeout; t > 0 {
		hibernate = strconv.Itoa(int((t+time.Second-1)/time.Second)) + " secs"
	}
	data := map[string]any{
		"D": map[string]any{
			"Name": d.Name, "Dir": d.Dir, "IP": d.IP, "Ports": d.ports[:],
			"LogPath": d.logPath, "CertFile": d.certFile, "KeyFile": d.keyFile,
			"MailUID": d.mailUID, "MailGID": d.mailGID, "MailDir": d.mailDir,
			"UsersFile": d.usersFile, "Opts": d.opts,
		},
		"RunDir":    runDir,
		"Trusted":   strings.Join(d.opts.TrustedNetworks, " "),
		"DHFile":    dh,
		"Hibernate": hibernate,
		"Procs":     loginProcesses,
		// Every imap, pop3 and login process (at most Dovecot's default
		// of 100 per login service) holds auth, anvil and stats
		// connections; size for the worst case.
		"AuthClients": 2*d.opts.ProcessLimit + 1000,
	}
	var b strings.Builder
	if err := dovecotConfTemplate.Execute(&b, data); err != nil {
		return fmt.Errorf("testbed: render dovecot.conf: %w", err)
	}
	if d.opts.ExtraConf != "" {
		b.WriteString("\n# ExtraConf\n")
		b.WriteString(d.opts.ExtraConf)
		b.WriteString("\n")
	}
	if err := os.WriteFile(d.conf, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("testbed: write dovecot.conf: %w", err)
	}
	return nil
}

// Start starts a stopped (or crashed) instance with the same
// configuration, data and ports and waits until IMAP and POP3 greet. It is
// an error to start a running instance.
func (d *Dovecot) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		if done, _ := d.proc.exited(); !done {
			return fmt.Errorf("testbed: dovecot %s is already running", d.Name)
		}
		// It died on its own; clean up what is left of it.
		d.proc.stop()
		os.RemoveAll(d.runDir)
		d.proc, d.runDir = nil, ""
	}
	dovecot, err := lookTool("dovecot")
	if err != nil {
		return err
	}
	// base_dir holds UNIX sockets (sun_path is 108 bytes), so it gets a
	// short path of its own rather than one under Dir.
	short, err := os.MkdirTemp(shortTempDir(), "sbdc")
	if err != nil {
		return fmt.Errorf("testbed: create dovecot base_dir: %w", err)
	}
	if err := os.Chmod(short, 0o755); err != nil {
		os.RemoveAll(short)
		return fmt.Errorf("testbed: chmod dovecot base_dir: %w", err)
	}
	runDir := filepath.Join(short, "run")
	if err := d.renderConf(runDir); err != nil {
		os.RemoveAll(short)
		return err
	}
	if err := d.checkConf(); err != nil {
		os.RemoveAll(short)
		return err
	}
	// Raise the open file limit through the shell: Go gives children the
	// limit it started with, and Dovecot's master and login processes need
	// several thousand descriptors under benchmark load.
	argv := []string{"/bin/sh", "-c", `ulimit -n "$1" 2>/dev/null; shift; exec "$@"`,
		"sh", strconv.FormatUint(noFileLimit(), 10), dovecot, "-F", "-c", d.conf}
	proc, err := startChild("dovecot "+d.Name, d.outPath, argv)
	if err != nil {
		os.RemoveAll(short)
		return err
	}
	if err := d.waitReady(proc); err != nil {
		proc.stop()
		os.RemoveAll(short)
		return err
	}
	d.proc, d.runDir = proc, short
	return nil
}

// checkConf runs doveconf on the configuration and returns its complaints.
func (d *Dovecot) checkConf() error {
	doveconf, err := lookTool("doveconf")
	if err != nil {
		return err
	}
	cmd := exec.Command(doveconf, "-n", "-c", d.conf)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("testbed: doveconf %s: %w\n%s", d.conf, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// waitReady waits until IMAP and POP3 greet and the TLS ports accept.
func (d *Dovecot) waitReady(proc *child) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if done, err := proc.exited(); done {
			return fmt.Errorf("testbed: %w\n%s", err, d.logTails())
		}
		lastErr = probeGreeting(d.IMAPAddr, "* OK")
		if lastErr == nil {
			lastErr = probeGreeting(d.POP3Addr, "+OK")
		}
		if lastErr == nil {
			return nil
		}
		time.Sleep(readyPollInterval)
	}
	return fmt.Errorf("testbed: dovecot %s not ready within %v: %w\n%s", d.Name, readyTimeout, lastErr, d.logTails())
}

func (d *Dovecot) logTails() string {
	return fmt.Sprintf("--- %s (tail) ---\n%s\n--- %s (tail) ---\n%s", d.outPath, tail(d.outPath), d.logPath, tail(d.logPath))
}

// Stop stops Dovecot: SIGTERM to its whole process group, SIGKILL after a
// grace period. Its ports refuse connections once Stop returns. The log
// then ends with "Killed with signal 15" warnings and, at times, errors
// such as "read(anvil) failed: EOF" from processes that outlived a peer by
// a moment. Stopping a stopped instance does nothing.
func (d *Dovecot) Stop() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return nil
	}
	err := d.proc.stop()
	if rmErr := os.RemoveAll(d.runDir); rmErr != nil && err == nil {
		err = fmt.Errorf("testbed: remove dovecot base_dir: %w", rmErr)
	}
	d.proc, d.runDir = nil, ""
	return err
}

// Running reports whether the Dovecot master is running: started and
// neither stopped nor dead.
func (d *Dovecot) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return false
	}
	done, _ := d.proc.exited()
	return !done
}

// Log returns the master's own output (startup errors) followed by
// Dovecot's log file, which has one line per login with user=<…>, rip=
// (the client address, or the forwarded one) and lip=.
func (d *Dovecot) Log() (string, error) {
	var b strings.Builder
	for _, path := range []string{d.outPath, d.logPath} {
		data, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("testbed: read dovecot log: %w", err)
		}
		b.Write(data)
	}
	return b.String(), nil
}

// AddUsers adds users to the passwd-file, replacing users with the same
// Mail. Dovecot notices the change on the next login.
func (d *Dovecot) AddUsers(users ...User) error {
	d.mu.Lock()
	defer d.mu.Unlock()
next:
	for _, u := range users {
		if u.Mail == "" || strings.ContainsAny(u.Mail, ":\n/") {
			return fmt.Errorf("testbed: dovecot %s: unusable user name %q", d.Name, u.Mail)
		}
		for i := range d.users {
			if d.users[i].Mail == u.Mail {
				d.users[i] = u
				continue next
			}
		}
		d.users = append(d.users, u)
	}
	var b strings.Builder
	for _, u := range d.users {
		hash, err := hashSSHA256(u.Password)
		if err != nil {
			return err
		}
		// user:password:uid:gid:gecos:home:shell
		fmt.Fprintf(&b, "%s:%s:%d:%d::::\n", u.Mail, hash, d.mailUID, d.mailGID)
	}
	// Replace the file atomically: Dovecot may be reading it.
	tmp := d.usersFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o640); err != nil {
		return fmt.Errorf("testbed: write passwd-file: %w", err)
	}
	if err := os.Chown(tmp, 0, d.authGID); err != nil {
		return fmt.Errorf("testbed: chown passwd-file: %w", err)
	}
	if err := os.Rename(tmp, d.usersFile); err != nil {
		return fmt.Errorf("testbed: replace passwd-file: %w", err)
	}
	return nil
}

// MailboxDir returns the Maildir of mail on this instance.
func (d *Dovecot) MailboxDir(mail string) string {
	local, domain := splitMail(mail)
	return filepath.Join(d.mailDir, domain, local)
}

// Seed delivers msgs (RFC 5322, see Message) straight into the INBOX of
// mail's Maildir, creating the Maildir if needed, as the mail user would.
// It works whether or not Dovecot is running.
func (d *Dovecot) Seed(mail string, msgs ...[]byte) error {
	local, domain := splitMail(mail)
	for _, part := range []string{local, domain} {
		if strings.Contains(part, "/") || part == "." || part == ".." {
			return fmt.Errorf("testbed: seed: unusable address %q", mail)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	box := d.MailboxDir(mail)
	for _, dir := range []string{filepath.Dir(box), box, filepath.Join(box, "cur"), filepath.Join(box, "new"), filepath.Join(box, "tmp")} {
		if err := d.mkdirMail(dir); err != nil {
			return err
		}
	}
	pid := os.Getpid()
	for _, msg := range msgs {
		d.seq++
		now := time.Now()
		// Maildir unique name: time, microseconds, pid, counter, host;
		// S= is the file size.
		name := fmt.Sprintf("%d.M%dP%dQ%d.testbed,S=%d", now.Unix(), now.Nanosecond()/1000, pid, d.seq, len(msg))
		tmp := filepath.Join(box, "tmp", name)
		if err := os.WriteFile(tmp, msg, 0o600); err != nil {
			return fmt.Errorf("testbed: seed %s: %w", mail, err)
		}
		if err := os.Chown(tmp, d.mailUID, d.mailGID); err != nil {
			return fmt.Errorf("testbed: seed %s: %w", mail, err)
		}
		if err := os.Rename(tmp, filepath.Join(box, "new", name)); err != nil {
			return fmt.Errorf("testbed: seed %s: %w", mail, err)
		}
	}
	return nil
}

// lookupUser returns the uid and gid of a system user.
func lookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("testbed: system user %s: %w", name, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("testbed: uid of %s: %w", name, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("testbed: gid of %s: %w", name, err)
	}
	return uid, gid, nil
}

// noFileLimit returns the RLIMIT_NOFILE to give Dovecot: maxNoFile, or the
// hard limit if that is lower.
func noFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return maxNoFile
	}
	return min(uint64(lim.Max), maxNoFile)
}

// shortTempDir returns a directory for paths that must stay short.
func shortTempDir() string {
	if tmp := os.TempDir(); len(tmp) <= 20 {
		return tmp
	}
	return "/tmp"
}

// grantSearch makes sure other users (mail, dovecot) may traverse every
// directory from / down to dir. It adds o+x to directories under
// os.TempDir (as created by t.TempDir or os.MkdirTemp) and reports an
// error for any other directory that lacks it.
func grantSearch(dir string) error {
	tmp, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil {
		tmp = os.TempDir()
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("testbed: resolve %s: %w", dir, err)
	}
	for d := resolved; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("testbed: stat %s: %w", d, err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			if !strings.HasPrefix(d, tmp+string(filepath.Separator)) {
				return fmt.Errorf("testbed: the mail user cannot reach %s: %s lacks o+x; use a directory under %s", dir, d, tmp)
			}
			if err := os.Chmod(d, st.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("testbed: chmod o+x %s: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
