package testbed

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// certLifetime is how long the CA and the certificates it issues are valid.
const certLifetime = 365 * 24 * time.Hour

// CA is a throw-away certificate authority for the testbed's TLS listeners.
// Its key never leaves memory; only the CA certificate and the issued
// certificates and keys are written to disk.
type CA struct {
	// File is the path of the CA certificate in PEM form, for clients
	// (LDAPTLS_CACERT, ssl_client_ca_file, the proxy's configuration).
	File string
	// Cert is the parsed CA certificate.
	Cert *x509.Certificate
	// Pool holds only Cert, for tls.Config.RootCAs.
	Pool *x509.CertPool

	dir string
	key *ecdsa.PrivateKey

	mu     sync.Mutex
	issued int // counter for file names
}

// NewCA creates a new ECDSA P-256 certificate authority and writes its
// certificate to dir/ca.pem. Issued certificates are written to dir too.
func NewCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: create CA dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testbed: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Switchboard testbed CA", Organization: []string{"Switchboard testbed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testbed: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testbed: parse CA certificate: %w", err)
	}
	file := filepath.Join(dir, "ca.pem")
	if err := writePEM(file, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{File: file, Cert: cert, Pool: pool, dir: dir, key: key}, nil
}

// Issue creates an ECDSA P-256 server certificate signed by the CA, valid for
// the given names: IP addresses become IP SANs, everything else DNS SANs. The
// first name is also the subject's common name. It returns the paths of the
// certificate (PEM, leaf only) and of its PKCS #8 private key (PEM, mode 0600).
func (ca *CA) Issue(names ...string) (certFile, keyFile string, err error) {
	if len(names) == 0 {
		return "", "", fmt.Errorf("testbed: issue certificate: no names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("testbed: generate key for %s: %w", names[0], err)
	}
	serial, err := randomSerial()
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"Switchboard testbed"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, name := range names {
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, name)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("testbed: create certificate for %s: %w", names[0], err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", fmt.Errorf("testbed: marshal key for %s: %w", names[0], err)
	}

	ca.mu.Lock()
	ca.issued++
	base := fmt.Sprintf("%s-%d", fileSafe(names[0]), ca.issued)
	ca.mu.Unlock()
	certFile = filepath.Join(ca.dir, base+".pem")
	keyFile = filepath.Join(ca.dir, base+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// ClientConfig returns a TLS client configuration that trusts only this CA
// and expects serverName (a DNS name or an IP address) in the certificate.
func (ca *CA) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testbed: certificate serial: %w", err)
	}
	return serial, nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("testbed: write %s: %w", path, err)
	}
	return nil
}

// fileSafe maps a host name or IP address to a file name component.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}
