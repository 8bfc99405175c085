package testbed

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// StatusActive is the default value of the status attribute.
const StatusActive = "active"

// User is a mail account known to the testbed: an LDAP entry and a
// passwd-file line on the Dovecot backends.
type User struct {
	// Mail is the address and login name, e.g. "alice@example.org".
	Mail string
	// Password is the login password, in clear text.
	Password string
	// Hosts are the backends holding the mailbox, in order; they become
	// the entry's host values in this order. In a Testbed they are backend
	// names ("mx1").
	Hosts []string
	// Status is the entry's status attribute; "" means StatusActive.
	Status string
	// Extra holds additional LDAP attributes for the entry. An attribute
	// given here replaces the harness's own value for it (cn, sn, uid,
	// objectClass …).
	Extra map[string][]string
}

// status returns the LDAP status value.
func (u User) status() string {
	if u.Status == "" {
		return StatusActive
	}
	return u.Status
}

// splitMail splits an address into local part and domain. An address
// without "@" has an empty domain.
func splitMail(mail string) (local, domain string) {
	i := strings.LastIndexByte(mail, '@')
	if i < 0 {
		return mail, ""
	}
	return mail[:i], mail[i+1:]
}

// The default users' passwords. carolPassword exercises quoting: it holds a
// space, a double quote, a backslash and non-ASCII letters.
const (
	alicePassword = "alice-secret"
	bobPassword   = "bob-secret"
	carolPassword = `c "quoted\pass" ß€`
	davePassword  = "dave-secret"
)

// DefaultUsers returns the users Start creates: alice@example.org and
// carol@example.org on mx1, bob@example.org and dave@example.org on mx2.
// carol's password contains a space, a double quote, a backslash and
// non-ASCII characters, for quoting and literal tests.
func DefaultUsers() []User {
	return []User{
		{Mail: "alice@example.org", Password: alicePassword, Hosts: []string{"mx1"}},
		{Mail: "bob@example.org", Password: bobPassword, Hosts: []string{"mx2"}},
		{Mail: "carol@example.org", Password: carolPassword, Hosts: []string{"mx1"}},
		{Mail: "dave@example.org", Password: davePassword, Hosts: []string{"mx2"}},
	}
}

// hashSSHA returns an LDAP {SSHA} userPassword value (salted SHA-1, the
// scheme slapd verifies by default).
func hashSSHA(password string) (string, error) {
	salt, err := randomBytes(8)
	if err != nil {
		return "", err
	}
	h := sha1.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...)), nil
}

// hashSSHA256 returns a Dovecot {SSHA256} password: cheap to verify, and its
// base64 form cannot contain the passwd-file field separator ':'.
func hashSSHA256(password string) (string, error) {
	salt, err := randomBytes(8)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write([]byte(password))
	h.Write(salt)
	return "{SSHA256}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...)), nil
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("testbed: random bytes: %w", err)
	}
	return b, nil
}

// bodyLineLen is the length of a generated body line without CRLF.
const bodyLineLen = 72

// Message returns a valid RFC 5322 message (CRLF line endings, 7-bit text
// body) from from to to with the given subject and a body of bodySize bytes
// (at least one line). Each call yields a unique Message-ID.
func Message(from, to, subject string, bodySize int) []byte {
	id, err := randomBytes(12)
	if err != nil {
		// crypto/rand does not fail on Linux; keep the message valid anyway.
		id = []byte(time.Now().Format(time.RFC3339Nano))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", to)
	fmt.Fprintf(&b, "Subject: %s\r\n", subject)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s@testbed.invalid>\r\n", hex.EncodeToString(id))
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=us-ascii\r\n")
	b.WriteString("Content-Transfer-Encoding: 7bit\r\n")
	b.WriteString("\r\n")

	const filler = "Line %06d of a generated test message. The quick brown fox jumps over the lazy dog."
	start := b.Len()
	for n := 1; b.Len()-start < bodySize || n == 1; n++ {
		room := bodySize - (b.Len() - start) - 2
		line := fmt.Sprintf(filler, n)
		line = line[:min(len(line), bodyLineLen, max(room, 1))]
		b.WriteString(line)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
