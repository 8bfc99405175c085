package main

import (
	"crypto/tls"
	"log/slog"

	"switchboard/config"
	sbtls "switchboard/tls"
)

// newServerTLS loads the listeners' certificates from [tls]. It returns
// nil without a [tls] table. Call Reload on the result to re-read the
// files; the *tls.Config from Config picks up the new certificates.
func newServerTLS(cfg *config.Config, logger *slog.Logger) (*sbtls.Server, error) {
	if cfg.TLS == nil {
		return nil, nil
	}
	var certs []sbtls.CertFile
	for _, p := range cfg.TLS.Pairs() {
		certs = append(certs, sbtls.CertFile{Cert: p.Cert, Key: p.Key})
	}
	s, err := sbtls.NewServer(&sbtls.ServerOptions{Certs: certs, Logger: logger})
	if err != nil {
		return nil, cfg.ErrorAt("tls", err)
	}
	return s, nil
}

// newBackendTLS returns the client configuration for dialling backends,
// or nil when backend.tls is false. ServerName is backend.server_name; when
// that is empty, the dialler must set it (on a Clone) to the host of the
// address it dials.
func newBackendTLS(cfg *config.Config) (*tls.Config, error) {
	if !cfg.Backend.TLS {
		return nil, nil
	}
	c, err := sbtls.NewClient(&sbtls.ClientOptions{CAFile: cfg.Backend.CAFile, ServerName: cfg.Backend.ServerName})
	if err != nil {
		return nil, cfg.ErrorAt("backend.ca_file", err)
	}
	return c, nil
}
