// Package loadgen is Switchboard's load generator: a lean IMAP and POP3
// client speaking raw protocol lines, the session workloads built from it
// (full IMAP session, POP3 session, bulk FETCH, IDLE holding) and the
// /proc sampling used to charge memory and CPU to a target's processes.
//
// The client is the same for every target, so its own cost, which competes
// for the same cores, cancels out in the ratios the benchmark reports.
package loadgen

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Proto is a mail access protocol.
type Proto string

// Protocols.
const (
	IMAP Proto = "imap"
	POP3 Proto = "pop3"
)

// TLSMode is how a session secures its connection.
type TLSMode string

// TLS modes. Implicit means IMAPS/POP3S (TLS from the first byte); StartTLS
// means STARTTLS (IMAP) or STLS (POP3) after the greeting.
const (
	TLSNone     TLSMode = "none"
	TLSImplicit TLSMode = "implicit"
	TLSStartTLS TLSMode = "starttls"
)

// User is one seeded account.
type User struct {
	Mail     string `json:"mail"`
	Password string `json:"password"`
	// Host is the backend the mailbox lives on ("mx1"); only the direct
	// target looks at it.
	Host string `json:"host"`
}

// Target says where sessions connect. It is plain data so that it can be
// handed to child processes as JSON.
type Target struct {
	Name string `json:"name"`
	// Addrs maps "proto/tls" ("imap/none", "imap/implicit", "pop3/starttls"
	// …) to the address to dial. A STARTTLS key may be omitted when the
	// plaintext port offers STARTTLS.
	Addrs map[string]string `json:"addrs,omitempty"`
	// PerHost, when set, maps a user's Host to its own Addrs: the direct
	// target connects to the user's backend itself.
	PerHost map[string]map[string]string `json:"per_host,omitempty"`
	// ServerName is the name verified in the target's certificates; an IP
	// literal checks the IP SAN.
	ServerName string `json:"server_name,omitempty"`
	// CAPEM is the CA that signed every certificate of the testbed.
	CAPEM []byte `json:"ca_pem,omitempty"`
}

// Addr returns the address for a session of u over p with TLS mode m.
func (t *Target) Addr(u *User, p Proto, m TLSMode) (string, error) {
	addrs := t.Addrs
	if t.PerHost != nil {
		addrs = t.PerHost[u.Host]
	}
	if a, ok := addrs[string(p)+"/"+string(m)]; ok {
		return a, nil
	}
	if m == TLSStartTLS {
		if a, ok := addrs[string(p)+"/"+string(TLSNone)]; ok {
			return a, nil
		}
	}
	return "", fmt.Errorf("target %s: no %s/%s address for host %q", t.Name, p, m, u.Host)
}

// Supports reports whether the target has an address for p and m (for some
// host, in the per-host case).
func (t *Target) Supports(p Proto, m TLSMode) bool {
	maps := []map[string]string{t.Addrs}
	if t.PerHost != nil {
		maps = maps[:0]
		for _, a := range t.PerHost {
			maps = append(maps, a)
		}
	}
	for _, a := range maps {
		if _, ok := a[string(p)+"/"+string(m)]; ok {
			return true
		}
		if _, ok := a[string(p)+"/"+string(TLSNone)]; ok && m == TLSStartTLS {
			return true
		}
	}
	return false
}

// TLSConfig returns the client TLS configuration for t. Session resumption
// is off: every session pays a full handshake, as a fresh client would.
// The key exchange is X25519 (or P-256).
func (t *Target) TLSConfig() (*tls.Config, error) {
	pool := x509.NewCertPool()
	if len(t.CAPEM) > 0 && !pool.AppendCertsFromPEM(t.CAPEM) {
		return nil, errors.New("loadgen: no certificate in CA PEM")
	}
	return &tls.Config{
		RootCAs:    pool,
		ServerName: t.ServerName,
		MinVersion: tls.VersionTLS12,
		// Offer the classic key exchanges only. Go would also offer
		// the post-quantum hybrid X25519MLKEM768, which only
		// Switchboard (Go) accepts; the others (OpenSSL 3.0) pick
		// X25519. Without it every target does the same handshake
		// (Perdition, which only knows P-256, asks for that).
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
	}, nil
}
