package testbed

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// schema is a copy of docs/ldap/switchboard.schema (a test keeps them equal).
//
//go:embed switchboard.schema
var schema []byte

// The directory tree every testbed slapd serves.
const (
	baseDN   = "dc=example,dc=org"
	peopleDN = "ou=people," + baseDN
	adminDN  = "cn=admin," + baseDN
	bindDN   = "cn=switchboard," + baseDN
)

// Debian's locations of the stock schema files and of the slapd modules.
const (
	slapdSchemaDir = "/etc/ldap/schema"
	slapdModuleDir = "/usr/lib/ldap"
)

// SlapdOptions configures StartSlapd.
type SlapdOptions struct {
	// Dir holds the configuration, the database, the certificate and the
	// log. Required; created if missing.
	Dir string
	// IP is the loopback address to listen on. Default: AllocIP().
	IP string
	// CA issues the server certificate. Default: a new CA in Dir/ca.
	CA *CA
	// AdminPassword is the rootdn's password. Default: random.
	AdminPassword string
	// BindPassword is the service account's password. Default: random.
	BindPassword string
	// Debug is slapd's -d argument. Default "0": stay in the foreground
	// and log nothing but startup errors. "stats" logs every operation.
	Debug string
	// SyncProv loads the syncprov overlay on the database, so that clients
	// can follow changes with RFC 4533 Content Synchronization (what
	// ldapmap.Watcher uses). Default false: the directory offers no change
	// feed, and a sync request is refused as an unavailable critical
	// extension.
	SyncProv bool
}

// Slapd is a running (or stopped) OpenLDAP server. The fields are fixed for
// the life of the instance; Stop and Start keep data, addresses and ports.
//
// The directory holds the suffix BaseDN, users under PeopleDN with the
// classes inetOrgPerson and switchboardUser, and the read-only service
// account BindDN, which may read entry, objectClass, mail, host and status
// below BaseDN, plus the operational attributes a watcher needs (entryCSN,
// without which slapd silently skips changes when a sync consumer resumes
// from a cookie, and modifyTimestamp for the poll fallback), and nothing
// else.
type Slapd struct {
	URI           string // "ldap://IP:PORT"; StartTLS is available
	LDAPSURI      string // "ldaps://IP:PORT"
	Addr          string // "IP:PORT" of URI
	LDAPSAddr     string // "IP:PORT" of LDAPSURI
	IP            string // loopback address of both listeners
	BaseDN        string // "dc=example,dc=org"
	PeopleDN      string // "ou=people,dc=example,dc=org"
	AdminDN       string // "cn=admin,dc=example,dc=org", the rootdn
	AdminPassword string
	BindDN        string // "cn=switchboard,dc=example,dc=org", the service account
	BindPassword  string
	CAFile        string // PEM file of the CA that issued the certificate
	Dir           string

	debug   string
	conf    string // slapd.conf path
	logPath string

	mu   sync.Mutex
	proc *child // nil while stopped
}

// StartSlapd writes a slapd.conf, checks it with slaptest, starts slapd and
// waits until it answers a bind. A new database gets the base entries
// (BaseDN, PeopleDN and the service account).
func StartSlapd(opts SlapdOptions) (*Slapd, error) {
	if opts.Dir == "" {
		return nil, errors.New("testbed: SlapdOptions.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("testbed: slapd dir: %w", err)
	}
	if opts.IP == "" {
		opts.IP = AllocIP()
	}
	if opts.Debug == "" {
		opts.Debug = "0"
	}
	for _, pw := range []*string{&opts.AdminPassword, &opts.BindPassword} {
		if *pw == "" {
			b, err := randomBytes(12)
			if err != nil {
				return nil, err
			}
			*pw = fmt.Sprintf("%x", b)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, fmt.Errorf("testbed: create slapd dir: %w", err)
	}
	if opts.CA == nil {
		if opts.CA, err = NewCA(filepath.Join(dir, "ca")); err != nil {
			return nil, err
		}
	}
	certFile, keyFile, err := opts.CA.Issue(opts.IP, "localhost")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(opts.IP, 2)
	if err != nil {
		return nil, err
	}
	s := &Slapd{
		Addr:          hostPort(opts.IP, ports[0]),
		LDAPSAddr:     hostPort(opts.IP, ports[1]),
		IP:            opts.IP,
		BaseDN:        baseDN,
		PeopleDN:      peopleDN,
		AdminDN:       adminDN,
		AdminPassword: opts.AdminPassword,
		BindDN:        bindDN,
		BindPassword:  opts.BindPassword,
		CAFile:        opts.CA.File,
		Dir:           dir,
		debug:         opts.Debug,
		conf:          filepath.Join(dir, "slapd.conf"),
		logPath:       filepath.Join(dir, "slapd.log"),
	}
	s.URI = "ldap://" + s.Addr
	s.LDAPSURI = "ldaps://" + s.LDAPSAddr

	schemaFile := filepath.Join(dir, "switchboard.schema")
	if err := os.WriteFile(schemaFile, schema, 0o644); err != nil {
		return nil, fmt.Errorf("testbed: write schema: %w", err)
	}
	rootPW, err := hashSSHA(s.AdminPassword)
	if err != nil {
		return nil, err
	}
	var conf strings.Builder
	err = slapdConfTemplate.Execute(&conf, map[string]any{
		"SchemaDir": slapdSchemaDir,
		"Schema":    schemaFile,
		"ModuleDir": slapdModuleDir,
		"Dir":       dir,
		"CAFile":    opts.CA.File,
		"CertFile":  certFile,
		"KeyFile":   keyFile,
		"BaseDN":    baseDN,
		"AdminDN":   adminDN,
		"RootPW":    rootPW,
		"BindDN":    bindDN,
		"DataDir":   filepath.Join(dir, "data"),
		"SyncProv":  opts.SyncProv,
	})
	if err != nil {
		return nil, fmt.Errorf("testbed: render slapd.conf: %w", err)
	}
	if err := os.WriteFile(s.conf, []byte(conf.String()), 0o600); err != nil {
		return nil, fmt.Errorf("testbed: write slapd.conf: %w", err)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	if err := s.addBase(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// slapdConfTemplate renders slapd.conf. Its data is a map of strings plus
// the bool SyncProv.
var slapdConfTemplate = template.Must(template.New("slapd.conf").Parse(`# Generated by switchboard/internal/testbed.
include {{.SchemaDir}}/core.schema
include {{.SchemaDir}}/cosine.schema
include {{.SchemaDir}}/inetorgperson.schema
include {{.Schema}}

pidfile {{.Dir}}/slapd.pid
argsfile {{.Dir}}/slapd.args
modulepath {{.ModuleDir}}
moduleload back_mdb
{{- if .SyncProv}}
moduleload syncprov
{{- end}}

TLSCACertificateFile {{.CAFile}}
TLSCertificateFile {{.CertFile}}
TLSCertificateKeyFile {{.KeyFile}}
TLSProtocolMin 3.3

database mdb
suffix "{{.BaseDN}}"
rootdn "{{.AdminDN}}"
rootpw {{.RootPW}}
directory {{.DataDir}}
maxsize 268435456
# A test database need not survive a power cut.
dbnosync
index objectClass eq
index mail,uid,host,status eq
index entryCSN,entryUUID eq
limits dn.exact="{{.BindDN}}" size=unlimited time=unlimited
{{- if .SyncProv}}
# RFC 4533 provider. A test database needs no session log: a consumer that
# comes back with a cookie gets a present phase.
overlay syncprov
syncprov-checkpoint 100 1
{{- end}}

access to attrs=userPassword
	by anonymous auth
	by * none
access to dn.subtree="{{.BaseDN}}" attrs=entry,objectClass,mail,host,status,entryCSN,modifyTimestamp
	by dn.exact="{{.BindDN}}" read
	by * none
access to *
	by * none
`))

// check runs slaptest on the configuration and returns its output on error.
func (s *Slapd) check() error {
	slaptest, err := lookTool("slaptest")
	if err != nil {
		return err
	}
	// -u: the database may not exist yet.
	out, err := exec.Command(slaptest, "-u", "-f", s.conf).CombinedOutput()
	if err != nil {
		return fmt.Errorf("testbed: slaptest %s: %w\n%s", s.conf, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Start starts a stopped (or crashed) slapd with the same configuration,
// data and ports, and waits until it answers. It is an error to start a
// running instance.
func (s *Slapd) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		if done, _ := s.proc.exited(); !done {
			return errors.New("testbed: slapd is already running")
		}
		s.proc.stop() // it died on its own
		s.proc = nil
	}
	slapd, err := lookTool("slapd")
	if err != nil {
		return err
	}
	argv := []string{slapd, "-f", s.conf, "-h", s.URI + "/ " + s.LDAPSURI + "/", "-d", s.debug}
	proc, err := startChild("slapd", s.logPath, argv)
	if err != nil {
		return err
	}
	if err := s.waitReady(proc); err != nil {
		proc.stop()
		return err
	}
	s.proc = proc
	return nil
}

// waitReady binds as the rootdn until that works, then checks that the
// ldaps port accepts connections.
func (s *Slapd) waitReady(proc *child) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for time.Now().Before(deadline) {
		if done, err := proc.exited(); done {
			return fmt.Errorf("testbed: %w\n--- %s (tail) ---\n%s", err, s.logPath, tail(s.logPath))
		}
		lastErr = s.ping()
		if lastErr == nil {
			conn, err := net.DialTimeout("tcp", s.LDAPSAddr, probeTimeout)
			if err == nil {
				conn.Close()
				return nil
			}
			lastErr = err
		}
		time.Sleep(readyPollInterval)
	}
	return fmt.Errorf("testbed: slapd not ready on %s within %v: %w\n--- %s (tail) ---\n%s",
		s.URI, readyTimeout, lastErr, s.logPath, tail(s.logPath))
}

// ping binds as the rootdn.
func (s *Slapd) ping() error {
	conn, err := s.DialAdmin()
	if err != nil {
		return err
	}
	return conn.Close()
}

// Stop stops slapd (SIGTERM, then SIGKILL after a grace period); its ports
// refuse connections once Stop returns. Stopping a stopped instance does
// nothing.
func (s *Slapd) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	err := s.proc.stop()
	s.proc = nil
	return err
}

// Running reports whether slapd is running: started and neither stopped
// nor dead.
func (s *Slapd) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return false
	}
	done, _ := s.proc.exited()
	return !done
}

// Log returns slapd's output (stdout and stderr) from all its runs.
func (s *Slapd) Log() (string, error) {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return "", fmt.Errorf("testbed: read slapd log: %w", err)
	}
	return string(data), nil
}

// DialAdmin returns a plain LDAP connection bound as the rootdn. The caller
// closes it.
func (s *Slapd) DialAdmin() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(s.URI, ldap.DialWithDialer(&net.Dialer{Timeout: dialTimeout}))
	if err != nil {
		return nil, fmt.Errorf("testbed: dial %s: %w", s.URI, err)
	}
	conn.SetTimeout(ldapOpTimeout)
	if err := conn.Bind(s.AdminDN, s.AdminPassword); err != nil {
		conn.Close()
		return nil, fmt.Errorf("testbed: bind %s as %s: %w", s.URI, s.AdminDN, err)
	}
	return conn, nil
}

// Delete removes the entries named by dns, so a test can leave the
// directory as it found it (go test -count=N runs it again on the same
// testbed).
func (s *Slapd) Delete(dns ...string) error {
	conn, err := s.DialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, dn := range dns {
		if err := conn.Del(ldap.NewDelRequest(dn, nil)); err != nil {
			return fmt.Errorf("testbed: delete %s: %w", dn, err)
		}
	}
	return nil
}

// UserDN returns the DN of mail's entry: mail=<mail>,ou=people,dc=example,dc=org.
func (s *Slapd) UserDN(mail string) string {
	return "mail=" + ldap.EscapeDN(mail) + "," + s.PeopleDN
}

// addBase creates the suffix, PeopleDN and the service account unless the
// suffix already exists.
func (s *Slapd) addBase() error {
	conn, err := s.DialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = conn.Search(ldap.NewSearchRequest(s.BaseDN, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		1, 0, false, "(objectClass=*)", []string{"1.1"}, nil))
	if err == nil {
		return nil
	}
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		return fmt.Errorf("testbed: look up %s: %w", s.BaseDN, err)
	}
	bindPW, err := hashSSHA(s.BindPassword)
	if err != nil {
		return err
	}
	base := ldap.NewAddRequest(s.BaseDN, nil)
	base.Attribute("objectClass", []string{"top", "dcObject", "organization"})
	base.Attribute("dc", []string{"example"})
	base.Attribute("o", []string{"Example"})
	people := ldap.NewAddRequest(s.PeopleDN, nil)
	people.Attribute("objectClass", []string{"top", "organizationalUnit"})
	people.Attribute("ou", []string{"people"})
	svc := ldap.NewAddRequest(s.BindDN, nil)
	svc.Attribute("objectClass", []string{"top", "organizationalRole", "simpleSecurityObject"})
	svc.Attribute("cn", []string{"switchboard"})
	svc.Attribute("description", []string{"Switchboard proxy: reads mail, host and status"})
	svc.Attribute("userPassword", []string{bindPW})
	for _, req := range []*ldap.AddRequest{base, people, svc} {
		if err := conn.Add(req); err != nil {
			return fmt.Errorf("testbed: add %s: %w", req.DN, err)
		}
	}
	return nil
}

// AddUsers adds one entry per user under PeopleDN (see User). The host
// values are sent in the given order in a single add operation; slapd
// keeps that order.
func (s *Slapd) AddUsers(users ...User) error {
	conn, err := s.DialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, u := range users {
		req, err := s.userAddRequest(u)
		if err != nil {
			return err
		}
		if err := conn.Add(req); err != nil {
			return fmt.Errorf("testbed: add user %s: %w", u.Mail, err)
		}
	}
	return nil
}

func (s *Slapd) userAddRequest(u User) (*ldap.AddRequest, error) {
	if u.Mail == "" {
		return nil, errors.New("testbed: add user: empty Mail")
	}
	local, _ := splitMail(u.Mail)
	pw, err := hashSSHA(u.Password)
	if err != nil {
		return nil, err
	}
	type attr struct {
		name string
		vals []string
	}
	attrs := []attr{
		{"objectClass", []string{"top", "inetOrgPerson", "switchboardUser"}},
		{"cn", []string{u.Mail}},
		{"sn", []string{local}},
		{"uid", []string{u.Mail}},
		{"mail", []string{u.Mail}},
		{"userPassword", []string{pw}},
		{"host", u.Hosts},
		{"status", []string{u.status()}},
	}
	extra := make([]string, 0, len(u.Extra))
	for name := range u.Extra {
		extra = append(extra, name)
	}
	sort.Strings(extra)
	for _, name := range extra {
		replaced := false
		for i := range attrs {
			if strings.EqualFold(attrs[i].name, name) {
				attrs[i].vals, replaced = u.Extra[name], true
			}
		}
		if !replaced {
			attrs = append(attrs, attr{name, u.Extra[name]})
		}
	}
	req := ldap.NewAddRequest(s.UserDN(u.Mail), nil)
	for _, a := range attrs {
		if len(a.vals) > 0 {
			req.Attribute(a.name, a.vals)
		}
	}
	return req, nil
}

// SetHosts replaces the host values of mail's entry, keeping their order.
// No hosts removes the attribute.
func (s *Slapd) SetHosts(mail string, hosts ...string) error {
	return s.modify(mail, "host", hosts)
}

// SetStatus replaces the status of mail's entry; "" removes the attribute.
func (s *Slapd) SetStatus(mail, status string) error {
	var vals []string
	if status != "" {
		vals = []string{status}
	}
	return s.modify(mail, "status", vals)
}

func (s *Slapd) modify(mail, attr string, vals []string) error {
	conn, err := s.DialAdmin()
	if err != nil {
		return err
	}
	defer conn.Close()
	req := ldap.NewModifyRequest(s.UserDN(mail), nil)
	req.Replace(attr, vals)
	if err := conn.Modify(req); err != nil {
		return fmt.Errorf("testbed: set %s of %s: %w", attr, mail, err)
	}
	return nil
}

// Add applies LDIF as the rootdn with ldapmodify -a: records without a
// changetype are added, and changetype: modify/delete/modrdn records work
// too. Errors include ldapmodify's output.
func (s *Slapd) Add(ldif string) error {
	ldapmodify, err := lookTool("ldapmodify")
	if err != nil {
		return err
	}
	pwFile := filepath.Join(s.Dir, "admin.pw")
	if err := os.WriteFile(pwFile, []byte(s.AdminPassword), 0o600); err != nil {
		return fmt.Errorf("testbed: write admin password file: %w", err)
	}
	cmd := exec.Command(ldapmodify, "-a", "-x", "-H", s.URI, "-D", s.AdminDN, "-y", pwFile,
		"-o", "nettimeout="+strconv.Itoa(int(dialTimeout/time.Second)))
	// Ignore /etc/ldap/ldap.conf and ~/.ldaprc.
	cmd.Env = append(os.Environ(), "LDAPNOINIT=1")
	cmd.Stdin = strings.NewReader(ldif)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("testbed: ldapmodify: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
