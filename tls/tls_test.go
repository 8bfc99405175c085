package tls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 100

func nextSerial() *big.Int {
	serial++
	return big.NewInt(serial)
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns PEM cert and key for names, signed by ca, and the serial.
func (ca *testCA) issue(t testing.TB, names ...string) (certPEM, keyPEM []byte, sn *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn = nextSerial()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), sn
}

// writePair writes a new certificate for names into dir/base.{pem,key}.
func (ca *testCA) writePair(t testing.TB, dir, base string, names ...string) (CertFile, *big.Int) {
	t.Helper()
	c, k, sn := ca.issue(t, names...)
	cf := CertFile{Cert: filepath.Join(dir, base+".pem"), Key: filepath.Join(dir, base+".key")}
	writeFile(t, cf.Cert, c)
	writeFile(t, cf.Key, k)
	return cf, sn
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSNISelection(t *testing.T) {
	ca := newCA(t, "Test CA")
	dir := t.TempDir()
	def, defSN := ca.writePair(t, dir, "default", "mail.example.org")
	wild, wildSN := ca.writePair(t, dir, "wild", "*.example.net", "example.net")
	other, otherSN := ca.writePair(t, dir, "other", "imap.example.com", "mail.example.org")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{def, wild, other}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni  string
		want *big.Int
	}{
		{"", defSN},
		{"mail.example.org", defSN}, // also named by "other": the first wins
		{"MAIL.Example.ORG.", defSN},
		{"imap.example.com", otherSN},
		{"example.net", wildSN},
		{"a.example.net", wildSN},
		{"A.Example.Net", wildSN},
		{"a.b.example.net", defSN}, // a wildcard covers one label only
		{"example.com", defSN},
		{"unknown.test", defSN},
		{".", defSN},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			c, err := s.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Leaf.SerialNumber; got.Cmp(tt.want) != 0 {
				t.Errorf("SNI %q: got serial %v, want %v", tt.sni, got, tt.want)
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	ca := newCA(t, "Test CA")
	cf, _ := ca.writePair(t, t.TempDir(), "mail", "mail.example.org")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{cf}})
	if err != nil {
		t.Fatal(err)
	}
	c := s.Config()
	if c != s.Config() {
		t.Error("Config returns a new value on each call; ticket keys would differ between listeners")
	}
	if c.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", c.MinVersion)
	}
	if c.GetCertificate == nil || len(c.Certificates) != 0 {
		t.Error("certificates must come from GetCertificate only")
	}
	if c.SessionTicketsDisabled {
		t.Error("session tickets disabled")
	}
	for _, id := range c.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.HasPrefix(name, "TLS_ECDHE_") || !(strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305")) {
			t.Errorf("cipher suite %s is not ECDHE+AEAD", name)
		}
	}
	if _, err := NewServer(&ServerOptions{Certs: []CertFile{cf}, MinVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 accepted as MinVersion")
	}
	if _, err := NewServer(&ServerOptions{}); err == nil {
		t.Error("NewServer without certificates succeeded")
	}
}

// echoServer accepts TLS conns on loopback and echoes what they send.
func echoServer(t *testing.T, config *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go acceptEcho(ln)
	return ln.Addr().String()
}

func acceptEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go echo(c)
	}
}

func echo(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.Copy(c, c)
}

func dial(t *testing.T, addr string, config *tls.Config) *tls.Conn {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func roundTrip(t *testing.T, c *tls.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo = %q, want %q", buf, msg)
	}
}

func peerSerial(c *tls.Conn) *big.Int {
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestReload(t *testing.T) {
	ca := newCA(t, "Test CA")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.pem)
	cf, oldSN := ca.writePair(t, dir, "mail", "mail.example.org")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{cf}})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, s.Config())
	client, err := NewClient(&ClientOptions{CAFile: filepath.Join(dir, "ca.pem"), ServerName: "mail.example.org"})
	if err != nil {
		t.Fatal(err)
	}

	old := dial(t, addr, client)
	if got := peerSerial(old); got.Cmp(oldSN) != 0 {
		t.Fatalf("first handshake: serial %v, want %v", got, oldSN)
	}
	roundTrip(t, old, "before reload\n")

	_, newSN := ca.writePair(t, dir, "mail", "mail.example.org")
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	fresh := dial(t, addr, client)
	if got := peerSerial(fresh); got.Cmp(newSN) != 0 {
		t.Errorf("handshake after reload: serial %v, want the new %v", got, newSN)
	}
	roundTrip(t, fresh, "new conn\n")
	// The conn made before the reload keeps working.
	roundTrip(t, old, "after reload\n")
}

func TestReloadBrokenKeepsOld(t *testing.T) {
	ca := newCA(t, "Test CA")
	dir := t.TempDir()
	cf, oldSN := ca.writePair(t, dir, "mail", "mail.example.org")
	extra, _ := ca.writePair(t, dir, "extra", "imap.example.com")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{cf, extra}})
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := ca.issue(t, "other.example.com")
	_, otherKey, _ := ca.issue(t, "other.example.com")

	tests := []struct {
		name    string
		file    string // file to break
		content []byte // nil: remove it
		wantIn  []string
	}{
		{"garbage key", cf.Key, []byte("not a key\n"), []string{"key file " + cf.Key}},
		{"truncated key", extra.Key, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), []string{"key file " + extra.Key}},
		{"key of another cert", cf.Key, otherKey, []string{cf.Key, "does not match", cf.Cert}},
		{"missing key", cf.Key, nil, []string{cf.Key, "no such file"}},
		{"garbage cert", cf.Cert, []byte("junk"), []string{"cert file " + cf.Cert}},
		{"key in cert file", cf.Cert, otherKey, []string{"cert file " + cf.Cert, "only a private key"}},
		{"cert of another key", extra.Cert, other, []string{extra.Key, "does not match"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			saved, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer writeFile(t, tt.file, saved)
			if tt.content == nil {
				os.Remove(tt.file)
			} else {
				writeFile(t, tt.file, tt.content)
			}
			err = s.Reload()
			if err == nil {
				t.Fatal("Reload succeeded with a broken file")
			}
			for _, w := range tt.wantIn {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			c, _ := s.GetCertificate(&tls.ClientHelloInfo{ServerName: "mail.example.org"})
			if c.Leaf.SerialNumber.Cmp(oldSN) != 0 {
				t.Error("the old certificate was replaced by a failed reload")
			}
		})
	}
	if err := s.Reload(); err != nil {
		t.Errorf("Reload after repair: %v", err)
	}
}

func TestClientVerify(t *testing.T) {
	ca := newCA(t, "Test CA")
	stranger := newCA(t, "Unknown CA")
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.pem)
	writeFile(t, filepath.Join(dir, "stranger.pem"), stranger.pem)
	cf, _ := ca.writePair(t, dir, "backend", "mx1.example.org")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{cf}})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, s.Config())

	tests := []struct {
		name       string
		opts       ClientOptions
		wantErr    string
		handshakes bool
	}{
		{"trusted CA", ClientOptions{CAFile: filepath.Join(dir, "ca.pem"), ServerName: "mx1.example.org"}, "", true},
		{"TLS 1.3 only", ClientOptions{CAFile: filepath.Join(dir, "ca.pem"), ServerName: "mx1.example.org", MinVersion: tls.VersionTLS13}, "", true},
		{"unknown CA", ClientOptions{CAFile: filepath.Join(dir, "stranger.pem"), ServerName: "mx1.example.org"}, "unknown authority", true},
		{"system roots", ClientOptions{ServerName: "mx1.example.org"}, "unknown authority", true},
		{"wrong name", ClientOptions{CAFile: filepath.Join(dir, "ca.pem"), ServerName: "mx2.example.org"}, "mx2.example.org", true},
		{"missing CA file", ClientOptions{CAFile: filepath.Join(dir, "nope.pem")}, "nope.pem", false},
		{"CA file without certs", ClientOptions{CAFile: cf.Key}, "no certificate found", false},
		{"TLS 1.0", ClientOptions{MinVersion: tls.VersionTLS10}, "not allowed", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			config, err := NewClient(&tt.opts)
			if !tt.handshakes {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("NewClient error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if config.InsecureSkipVerify {
				t.Fatal("InsecureSkipVerify set")
			}
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, config)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("handshake error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

// TestServerRefusesWeak checks that old versions and non-AEAD suites fail.
func TestServerRefusesWeak(t *testing.T) {
	ca := newCA(t, "Test CA")
	cf, _ := ca.writePair(t, t.TempDir(), "mail", "mail.example.org")
	s, err := NewServer(&ServerOptions{Certs: []CertFile{cf}})
	if err != nil {
		t.Fatal(err)
	}
	addr := echoServer(t, s.Config())
	tests := []struct {
		name   string
		config *tls.Config
	}{
		{"TLS 1.1", &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}},
		{"CBC suite", &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tt.config)
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
		})
	}
}

func BenchmarkGetCertificate(b *testing.B) {
	ca := newCA(b, "Bench CA")
	dir := b.TempDir()
	var certs []CertFile
	for i, names := range [][]string{
		{"mail.example.org"},
		{"*.example.net"},
		{"imap.example.com", "pop.example.com"},
	} {
		cf, _ := ca.writePair(b, dir, string(rune('a'+i)), names...)
		certs = append(certs, cf)
	}
	s, err := NewServer(&ServerOptions{Certs: certs})
	if err != nil {
		b.Fatal(err)
	}
	for _, sni := range []string{"imap.example.com", "x.example.net", "unknown.test"} {
		b.Run(sni, func(b *testing.B) {
			hello := &tls.ClientHelloInfo{ServerName: sni}
			b.ReportAllocs()
			for b.Loop() {
				if c, _ := s.GetCertificate(hello); c == nil {
					b.Fatal("no certificate")
				}
			}
		})
	}
}
