package tls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// expiryWarning is how close to its NotAfter a certificate must be for a
// load to log a warning about it.
const expiryWarning = 14 * 24 * time.Hour

// CertFile names one certificate chain and its private key, both PEM files.
type CertFile struct {
	// Cert is the certificate chain, leaf first.
	Cert string
	// Key is the private key matching the leaf.
	Key string
}

// ServerOptions configure a Server. NewServer copies them.
type ServerOptions struct {
	// Certs are the certificates to serve. At least one is required. The
	// first is the default, served when the client sends no SNI or a name
	// no certificate covers.
	Certs []CertFile
	// MinVersion is the oldest TLS version accepted. Zero means TLS 1.2;
	// anything older than TLS 1.2 is an error.
	MinVersion uint16
	// Logger receives reload and expiry messages. Nil discards them.
	Logger *slog.Logger
}

// Server holds the listeners' certificates and hands them out by SNI. Its
// methods are safe for concurrent use.
type Server struct {
	certs  []CertFile
	logger *slog.Logger
	config *tls.Config
	set    atomic.Pointer[certSet]
}

// certSet is one loaded generation of certificates. It is never modified
// once published, so the handshake path reads it without locks.
type certSet struct {
	// exact maps a lower-case DNS name to its certificate.
	exact map[string]*tls.Certificate
	// wildcard maps the domain of a "*.domain" name to its certificate.
	wildcard map[string]*tls.Certificate
	// def is served when nothing else matches.
	def *tls.Certificate
}

// NewServer loads every certificate in opts and returns a Server that
// serves them. Errors name the file at fault.
func NewServer(opts *ServerOptions) (*Server, error) {
	if len(opts.Certs) == 0 {
		return nil, errors.New("tls: no certificate configured")
	}
	minv, err := minVersion(opts.MinVersion)
	if err != nil {
		return nil, err
	}
	s := &Server{
		certs:  append([]CertFile(nil), opts.Certs...),
		logger: opts.Logger,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	set, err := s.load()
	if err != nil {
		return nil, err
	}
	s.set.Store(set)
	s.config = &tls.Config{
		MinVersion:       minv,
		GetCertificate:   s.GetCertificate,
		CipherSuites:     cipherSuites,
		CurvePreferences: curvePreferences,
		// Session tickets stay on: crypto/tls rotates their keys itself,
		// and resumption spares mail clients that reconnect often a full
		// handshake.
		SessionTicketsDisabled: false,
	}
	return s, nil
}

// Config returns the server configuration for the listeners. It is the
// same value on every call, so all listeners share session ticket keys;
// callers must not modify it (Clone it first). Certificates are chosen at
// handshake time, so a Reload takes effect without a new Config.
func (s *Server) Config() *tls.Config { return s.config }

// Reload re-reads every certificate and key file. It is all or nothing: on
// any error the certificates in use stay as they were and the error names
// the file at fault. Connections already established are not affected;
// new handshakes see the new certificates.
func (s *Server) Reload() error {
	set, err := s.load()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	s.set.Store(set)
	return nil
}

// GetCertificate picks the certificate for a handshake: the one whose DNS
// name equals the SNI name, else the one with a wildcard for its parent
// domain, else the default. It never fails, does not parse anything and
// does not allocate for a lower-case SNI name. It is the GetCertificate
// hook of Config.
func (s *Server) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.set.Load().pick(hello.ServerName), nil
}

func (cs *certSet) pick(name string) *tls.Certificate {
	if name == "" {
		return cs.def
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if c, ok := cs.exact[name]; ok {
		return c
	}
	// A wildcard covers exactly one label (RFC 6125 section 6.4.3).
	if i := strings.IndexByte(name, '.'); i > 0 {
		if c, ok := cs.wildcard[name[i+1:]]; ok {
			return c
		}
	}
	return cs.def
}

// load reads all configured certificates into a new set.
func (s *Server) load() (*certSet, error) {
	set := &certSet{
		exact:    make(map[string]*tls.Certificate),
		wildcard: make(map[string]*tls.Certificate),
	}
	now := time.Now()
	for i, cf := range s.certs {
		c, err := loadPair(cf)
		if err != nil {
			return nil, err
		}
		leaf := c.Leaf
		if now.After(leaf.NotAfter) {
			s.logger.Warn("tls certificate has expired", "cert", cf.Cert, "not_after", leaf.NotAfter)
		} else if leaf.NotAfter.Sub(now) < expiryWarning {
			s.logger.Warn("tls certificate expires soon", "cert", cf.Cert, "not_after", leaf.NotAfter)
		}
		if i == 0 {
			set.def = c
		}
		for _, name := range leaf.DNSNames {
			name = strings.TrimSuffix(strings.ToLower(name), ".")
			m, key := set.exact, name
			if rest, ok := strings.CutPrefix(name, "*."); ok {
				m, key = set.wildcard, rest
			}
			// The first certificate naming a host wins, so the order of
			// the configuration decides overlaps.
			if _, dup := m[key]; !dup {
				m[key] = c
			}
		}
		s.logger.Debug("tls certificate loaded", "cert", cf.Cert, "names", leaf.DNSNames, "not_after", leaf.NotAfter)
	}
	return set, nil
}

// loadPair reads one certificate and key, and parses the leaf so that the
// handshake does not. Errors name the file at fault.
func loadPair(cf CertFile) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(cf.Cert)
	if err != nil {
		return nil, fmt.Errorf("cert file: %w", err)
	}
	keyPEM, err := os.ReadFile(cf.Key)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if err := checkCertPEM(certPEM); err != nil {
		return nil, fmt.Errorf("cert file %s: %w", cf.Cert, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The chain parsed above, so the fault is in the key file or in
		// the pairing of the two.
		if strings.Contains(err.Error(), "does not match") {
			return nil, fmt.Errorf("key file %s does not match cert file %s: %w", cf.Key, cf.Cert, err)
		}
		return nil, fmt.Errorf("key file %s: %w", cf.Key, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("cert file %s: %w", cf.Cert, err)
		}
	}
	return &c, nil
}

// checkCertPEM reports whether data holds at least one certificate and
// every certificate in it parses.
func checkCertPEM(data []byte) error {
	n, keys := 0, 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			keys++
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return err
		}
		n++
	}
	switch {
	case n == 0 && keys > 0:
		return errors.New("no certificate found, only a private key (cert and key swapped?)")
	case n == 0:
		return errors.New("no certificate found")
	}
	return nil
}
