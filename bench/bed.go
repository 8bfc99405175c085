package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"switchboard/bench/loadgen"
	"switchboard/internal/testbed"
)

// Seeded mail.
const (
	sessionMessages    = 10      // per user: FETCH 1:10 reads them all
	sessionMessageSize = 3000    // bytes of body; RETR 1 moves about 3.3 KB
	bulkUsersPerBE     = 2       // users holding large messages, per backend
	bulkMessages       = 4       // large messages per bulk user
	bulkMessageSize    = 1 << 20 // 1 MiB
	// hibernateTimeout lets the backends move IDLE sessions out of their
	// imap processes, as a production Dovecot with many idle clients
	// would; it is shorter than idleSettle.
	hibernateTimeout = 2 * time.Second
)

// bed is the testbed as the benchmark uses it: the pieces of
// internal/testbed (CA, slapd, two Dovecot backends), put together so that
// both backends also listen on one common IMAP and one common POP3 port,
// and each user's LDAP host value is the IP of its backend. Every proxy
// then routes from the same directory data the same way: the host value
// is the address, the port is the protocol's backend port.
type bed struct {
	ca       *testbed.CA
	caPEM    []byte
	slapd    *testbed.Slapd
	backends [2]*testbed.Dovecot
	// imapPort and pop3Port are the plaintext ports common to both
	// backends (extra listeners added through ExtraConf).
	imapPort, pop3Port int
	users              []loadgen.User // session users, spread over both backends
	bulkUsers          []loadgen.User // users with bulkMessages of 1 MiB
}

var backendNames = [2]string{"mx1", "mx2"}

func startBed(dir string, usersPerBE int) (b *bed, err error) {
	if err := testbed.Check(); err != nil {
		return nil, err
	}
	b = &bed{}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	if b.ca, err = testbed.NewCA(filepath.Join(dir, "ca")); err != nil {
		return nil, err
	}
	if b.caPEM, err = os.ReadFile(b.ca.File); err != nil {
		return nil, err
	}
	if b.slapd, err = testbed.StartSlapd(testbed.SlapdOptions{Dir: filepath.Join(dir, "slapd"), CA: b.ca}); err != nil {
		return nil, err
	}
	ips := [2]string{testbed.AllocIP(), testbed.AllocIP()}
	for ips[1] == ips[0] {
		ips[1] = testbed.AllocIP()
	}
	ports, err := commonFreePorts(ips[:], 2)
	if err != nil {
		return nil, err
	}
	b.imapPort, b.pop3Port = ports[0], ports[1]

	var ldapUsers []testbed.User
	var beUsers [2][]testbed.User
	add := func(i int, mail string, bulk bool) {
		pw := randomHex(8)
		tu := testbed.User{Mail: mail, Password: pw, Hosts: []string{backendNames[i]},
			Extra: map[string][]string{"host": {ips[i]}}}
		ldapUsers = append(ldapUsers, tu)
		beUsers[i] = append(beUsers[i], tu)
		lu := loadgen.User{Mail: mail, Password: pw, Host: backendNames[i]}
		if bulk {
			b.bulkUsers = append(b.bulkUsers, lu)
		} else {
			b.users = append(b.users, lu)
		}
	}
	// Interleave the backends so that round-robin sessions alternate.
	for n := 1; n <= usersPerBE; n++ {
		for i := range backendNames {
			add(i, fmt.Sprintf("user%04d.%s@example.org", n, backendNames[i]), false)
		}
	}
	for n := 1; n <= bulkUsersPerBE; n++ {
		for i := range backendNames {
			add(i, fmt.Sprintf("bulk%02d.%s@example.org", n, backendNames[i]), true)
		}
	}
	for i, name := range backendNames {
		b.backends[i], err = testbed.StartDovecot(testbed.DovecotOptions{
			Name: name, Dir: filepath.Join(dir, name), IP: ips[i], CA: b.ca,
			Users:            beUsers[i],
			HibernateTimeout: hibernateTimeout,
			ExtraConf:        commonListeners(ips[i], b.imapPort, b.pop3Port),
		})
		if err != nil {
			return nil, err
		}
	}
	if err := b.slapd.AddUsers(ldapUsers...); err != nil {
		return nil, err
	}
	return b, b.seed(ldapUsers)
}

// commonListeners adds the plaintext listeners on the port every backend
// shares; the testbed's own listeners stay as they are.
func commonListeners(ip string, imapPort, pop3Port int) string {
	return fmt.Sprintf(`# switchboard/bench: the backend port common to every backend.
service imap-login {
  inet_listener imap_common {
    address = %[1]s
    port = %[2]d
  }
}
service pop3-login {
  inet_listener pop3_common {
    address = %[1]s
    port = %[3]d
  }
}
`, ip, imapPort, pop3Port)
}

// seed delivers the messages, four users at a time.
func (b *bed) seed(users []testbed.User) error {
	errc := make(chan error, len(users))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		sem <- struct{}{}
		go b.seedUser(u, &wg, sem, errc)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			return err
		}
	}
	return nil
}

// seedUser delivers one user's messages into its backend's Maildir.
func (b *bed) seedUser(u testbed.User, wg *sync.WaitGroup, sem <-chan struct{}, errc chan<- error) {
	defer wg.Done()
	defer func() { <-sem }()
	n, size := sessionMessages, sessionMessageSize
	if strings.HasPrefix(u.Mail, "bulk") {
		n, size = bulkMessages, bulkMessageSize
	}
	msgs := make([][]byte, n)
	for i := range msgs {
		msgs[i] = testbed.Message("sender@example.net", u.Mail, fmt.Sprintf("Message %d", i+1), size)
	}
	be := b.backends[0]
	if u.Hosts[0] == backendNames[1] {
		be = b.backends[1]
	}
	errc <- be.Seed(u.Mail, msgs...)
}

func (b *bed) close() {
	for _, d := range b.backends {
		if d != nil {
			d.Stop()
		}
	}
	if b.slapd != nil {
		b.slapd.Stop()
	}
}

// backendPIDs returns the process trees of both backends.
func (b *bed) backendPIDs() []int {
	var roots []int
	for _, d := range b.backends {
		roots = append(roots, pidsByCmdline(filepath.Join(d.Dir, "dovecot.conf"))...)
	}
	return loadgen.ProcTree(roots...)
}

// pidsByCmdline returns the processes whose command line contains s and
// whose parent's does not (the roots of the trees that mention s).
func pidsByCmdline(s string) []int {
	ents, _ := os.ReadDir("/proc")
	match := make(map[int]bool)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(cl), s) {
			match[pid] = true
		}
	}
	var roots []int
	for pid := range match {
		if pp, ok := loadgen.ParentPID(pid); !ok || !match[pp] {
			roots = append(roots, pid)
		}
	}
	return roots
}

// commonFreePorts returns n ports free on every one of ips at once.
func commonFreePorts(ips []string, n int) ([]int, error) {
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n && tries < 100; tries++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			return nil, err
		}
		port := first.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{first}
		ok := true
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		held = append(held, ls...)
		if ok {
			ports = append(ports, port)
		}
	}
	if len(ports) < n {
		return nil, fmt.Errorf("no port free on all of %v", ips)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
