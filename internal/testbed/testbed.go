package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// Start's defaults.
const (
	defaultMessagesPerUser = 3
	defaultMessageSize     = 1024 // body bytes of a seeded message
)

// backendNames are the Dovecot instances Start creates, in order.
var backendNames = []string{"mx1", "mx2"}

// Options configures Start. The zero value works.
type Options struct {
	// Dir holds everything (ca/, ldap/, mx1/, mx2/). Default: a new
	// temporary directory that Close removes. A caller-supplied Dir is
	// left in place.
	Dir string
	// ExtraUsers are added after DefaultUsers. Their Hosts should name
	// backends ("mx1", "mx2"); messages are seeded only on those.
	ExtraUsers []User
	// UsersPerBackend adds that many generated users per backend:
	// user0001@example.org … on mx1, then the next ones on mx2, each with
	// the password "secret-" plus its local part (e.g. "secret-user0001").
	UsersPerBackend int
	// MessagesPerUser is how many messages each user's INBOX starts with.
	// Zero means 3; negative means none.
	MessagesPerUser int
	// ConfigureBackend, if set, may adjust each backend's options (limits,
	// hibernation, ExtraConf) before it starts. Dir, IP, CA and Users are
	// already filled in.
	ConfigureBackend func(name string, opts *DovecotOptions)
	// ConfigureLDAP, if set, may adjust slapd's options before it starts.
	ConfigureLDAP func(opts *SlapdOptions)
}

// Testbed is a CA, one slapd and the Dovecot backends "mx1" and "mx2",
// with users in LDAP (host = the backend's name) and in every backend's
// passwd-file, so a mailbox can be moved by changing its host.
type Testbed struct {
	Dir      string
	CA       *CA
	LDAP     *Slapd
	Backends map[string]*Dovecot // "mx1", "mx2"
	Users    []User              // everyone, DefaultUsers first

	removeDir bool
	closeOnce sync.Once
	closeErr  error
}

// Start starts a complete testbed (see Testbed) and seeds each user's
// INBOX on the backends named in its Hosts. slapd and the backends start
// in parallel. On error, everything already started is stopped.
func Start(opts Options) (tb *Testbed, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	tb = &Testbed{Dir: opts.Dir, Backends: make(map[string]*Dovecot)}
	if tb.Dir == "" {
		if tb.Dir, err = os.MkdirTemp("", "switchboard-testbed-"); err != nil {
			return nil, fmt.Errorf("testbed: create dir: %w", err)
		}
		tb.removeDir = true
	}
	defer func() {
		if err != nil {
			tb.Close()
			tb = nil
		}
	}()
	if tb.CA, err = NewCA(filepath.Join(tb.Dir, "ca")); err != nil {
		return tb, err
	}
	tb.Users = append(DefaultUsers(), opts.ExtraUsers...)
	for i := range opts.UsersPerBackend * len(backendNames) {
		local := fmt.Sprintf("user%04d", i+1)
		tb.Users = append(tb.Users, User{
			Mail:     local + "@example.org",
			Password: "secret-" + local,
			Hosts:    []string{backendNames[i/opts.UsersPerBackend]},
		})
	}

	results := make(chan startResult, 1+len(backendNames))
	slapdOpts := SlapdOptions{Dir: filepath.Join(tb.Dir, "ldap"), CA: tb.CA}
	if opts.ConfigureLDAP != nil {
		opts.ConfigureLDAP(&slapdOpts)
	}
	go startSlapdAsync(slapdOpts, results)
	for _, name := range backendNames {
		dopts := DovecotOptions{Name: name, Dir: filepath.Join(tb.Dir, name), IP: AllocIP(), CA: tb.CA, Users: tb.Users}
		if opts.ConfigureBackend != nil {
			opts.ConfigureBackend(name, &dopts)
		}
		if err := seedMailboxes(name, dopts, tb.Users, opts.MessagesPerUser); err != nil {
			return tb, err
		}
		go startDovecotAsync(dopts, results)
	}
	var errs []error
	for range 1 + len(backendNames) {
		r := <-results
		switch {
		case r.err != nil:
			errs = append(errs, r.err)
		case r.slapd != nil:
			tb.LDAP = r.slapd
		case r.dovecot != nil:
			tb.Backends[r.dovecot.Name] = r.dovecot
		}
	}
	if err := errors.Join(errs...); err != nil {
		return tb, err
	}
	if err := tb.LDAP.AddUsers(tb.Users...); err != nil {
		return tb, err
	}
	return tb, nil
}

// startResult carries one component's outcome back to Start.
type startResult struct {
	slapd   *Slapd
	dovecot *Dovecot
	err     error
}

func startSlapdAsync(opts SlapdOptions, results chan<- startResult) {
	s, err := StartSlapd(opts)
	results <- startResult{slapd: s, err: err}
}

func startDovecotAsync(opts DovecotOptions, results chan<- startResult) {
	d, err := StartDovecot(opts)
	results <- startResult{dovecot: d, err: err}
}

// seedMailboxes writes the starting messages of the users living on
// backend into its mail directory before Dovecot starts. It uses a
// Dovecot value that is never started, which only knows the paths.
func seedMailboxes(backend string, opts DovecotOptions, users []User, perUser int) error {
	if perUser == 0 {
		perUser = defaultMessagesPerUser
	}
	if perUser < 0 {
		return nil
	}
	d := &Dovecot{Name: backend, Dir: opts.Dir, mailDir: filepath.Join(opts.Dir, "mail")}
	var err error
	if d.mailUID, d.mailGID, err = lookupUser("mail"); err != nil {
		return err
	}
	if err := os.MkdirAll(d.Dir, 0o711); err != nil {
		return fmt.Errorf("testbed: create %s dir: %w", backend, err)
	}
	if err := d.mkdirMail(d.mailDir); err != nil {
		return err
	}
	for _, u := range users {
		if !slices.Contains(u.Hosts, backend) {
			continue
		}
		msgs := make([][]byte, perUser)
		for i := range msgs {
			subject := fmt.Sprintf("Test message %d of %d for %s", i+1, perUser, u.Mail)
			msgs[i] = Message("sender@example.net", u.Mail, subject, defaultMessageSize)
		}
		if err := d.Seed(u.Mail, msgs...); err != nil {
			return err
		}
	}
	return nil
}

// User returns the testbed user with the given address.
func (tb *Testbed) User(mail string) (User, bool) {
	for _, u := range tb.Users {
		if u.Mail == mail {
			return u, true
		}
	}
	return User{}, false
}

// Close stops every instance and, if Start created the directory, removes
// it. It is safe to call more than once; later calls return the first
// result.
func (tb *Testbed) Close() error {
	tb.closeOnce.Do(func() {
		var errs []error
		for _, name := range backendNames {
			if d := tb.Backends[name]; d != nil {
				errs = append(errs, d.Stop())
			}
		}
		if tb.LDAP != nil {
			errs = append(errs, tb.LDAP.Stop())
		}
		if tb.removeDir {
			errs = append(errs, os.RemoveAll(tb.Dir))
		}
		tb.closeErr = errors.Join(errs...)
	})
	return tb.closeErr
}
