// Package tls builds the *crypto/tls.Config values Switchboard uses: one for
// its listeners, which picks a certificate by SNI and can reload the
// certificate files without a restart, and one for its own connections to
// backends and to LDAP, which always verifies the peer.
//
// The package is named after its folder, tls, and so hides crypto/tls in any
// file that needs both. Such files import it as sbtls:
//
//	import (
//		"crypto/tls"
//
//		sbtls "switchboard/tls"
//	)
//
//	srv, err := sbtls.NewServer(&sbtls.ServerOptions{
//		Certs: []sbtls.CertFile{{Cert: "/etc/switchboard/tls/mail.pem", Key: "/etc/switchboard/tls/mail.key"}},
//	})
//	ln := tls.NewListener(inner, srv.Config())
//	// on SIGHUP:
//	if err := srv.Reload(); err != nil { log.Error("tls reload", "err", err) }
//
// Both sides speak TLS 1.2 (RFC 5246) and 1.3 (RFC 8446) only, as RFC 8996
// and RFC 9325 ask. TLS 1.2 is limited to ECDHE key exchange with AEAD
// ciphers (AES-GCM, ChaCha20-Poly1305, RFC 9325 section 4.2); TLS 1.3 suites
// are not configurable in Go and are all AEAD.
package tls

import (
	"crypto/tls"
	"fmt"
)

// cipherSuites are the TLS 1.2 suites allowed, both as server and as client:
// forward secret (ECDHE) and authenticated encryption only (RFC 9325
// section 4.2). The order is ignored by crypto/tls.
var cipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// curvePreferences are the key exchanges offered: the hybrid post-quantum
// ones Go supports, then X25519 and P-256 for older peers. crypto/tls ignores
// the order and applies its own preference.
var curvePreferences = []tls.CurveID{
	tls.X25519MLKEM768,
	tls.SecP256r1MLKEM768,
	tls.X25519,
	tls.CurveP256,
}

// minVersion returns the minimum TLS version to use for v: zero means TLS
// 1.2, and anything older than TLS 1.2 is refused.
func minVersion(v uint16) (uint16, error) {
	switch v {
	case 0:
		return tls.VersionTLS12, nil
	case tls.VersionTLS12, tls.VersionTLS13:
		return v, nil
	default:
		return 0, fmt.Errorf("tls: minimum version %s not allowed; use TLS 1.2 or 1.3", tls.VersionName(v))
	}
}
