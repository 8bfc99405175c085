package tls

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientOptions configure the TLS client side, used to dial backends and
// LDAP servers.
type ClientOptions struct {
	// CAFile is a PEM file of the certificate authorities to trust. Empty
	// means the system roots.
	CAFile string
	// ServerName is the name the peer's certificate must carry. Empty
	// leaves it to the dialer: tls.Dial and tls.DialWithDialer take it
	// from the address; callers that wrap an existing conn (StartTLS) must
	// set it on a Clone.
	ServerName string
	// MinVersion is the oldest TLS version offered. Zero means TLS 1.2;
	// anything older than TLS 1.2 is an error.
	MinVersion uint16
}

// NewClient returns a client configuration that verifies the peer's
// certificate chain and name. It never sets InsecureSkipVerify.
func NewClient(opts *ClientOptions) (*tls.Config, error) {
	minv, err := minVersion(opts.MinVersion)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{
		ServerName:       opts.ServerName,
		MinVersion:       minv,
		CipherSuites:     cipherSuites,
		CurvePreferences: curvePreferences,
	}
	if opts.CAFile != "" {
		pemData, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("ca file %s: no certificate found", opts.CAFile)
		}
		c.RootCAs = pool
	}
	return c, nil
}
