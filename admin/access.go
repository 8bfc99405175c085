package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"switchboard/internal/secret"
)

// Access says who may use the listener. Its zero value serves /metrics
// and /status to loopback peers without a token, and nothing else.
type Access struct {
	// ControlToken is the bearer token of every request that changes
	// state (invalidate, kick, hold, release), on loopback too: the
	// webmail's PHP on the same machine must not hold users. Empty turns
	// the control endpoints off (403). It is accepted for reads too.
	ControlToken secret.String
	// ReadToken is the bearer token of /metrics, /status and the
	// profiler; it cannot change state. Empty: loopback peers read without
	// a token, and others need the ControlToken.
	ReadToken secret.String
	// HostNames are names the Host header may carry besides the
	// listener's own address (the IP the request came in on, "localhost"
	// on loopback, a name in Options.Addr), e.g. the DNS name Prometheus
	// scrapes. Compared without case; a port given must be the
	// listener's. Any other Host is refused, against DNS rebinding.
	HostNames []string
	// Pprof serves Go's profiler (net/http/pprof) under /debug/pprof/ to
	// loopback peers with read access. Off by default: it exposes
	// command line, stacks and allocation sites, and a CPU profile costs
	// CPU.
	Pprof bool
}

// level is what a request may do once admitted.
type level int

const (
	levelRead    level = iota // /metrics, /status
	levelControl              // anything that changes state
	levelProfile              // /debug/pprof/: read access, loopback peers only
)

// refusal is a request turned away: the status code and the reason, which
// goes to the client and the log. It never holds a token.
type refusal struct {
	code   int
	reason string
}

// tokens are the hashed bearer tokens, so that comparisons take the same
// time whatever the length of the token sent.
type tokens struct {
	control, read       [sha256.Size]byte
	hasControl, hasRead bool
}

func newTokens(a *Access) tokens {
	var t tokens
	if a.ControlToken != "" {
		t.control, t.hasControl = sha256.Sum256([]byte(a.ControlToken)), true
	}
	if a.ReadToken != "" {
		t.read, t.hasRead = sha256.Sum256([]byte(a.ReadToken)), true
	}
	return t
}

// hostSet returns the lower-cased names of Access.HostNames, and the host
// of addr when it is a name rather than an address.
func hostSet(a *Access, addr string) map[string]bool {
	m := make(map[string]bool, len(a.HostNames)+1)
	for _, n := range a.HostNames {
		m[strings.ToLower(n)] = true
	}
	if h, _, err := net.SplitHostPort(addr); err == nil && h != "" {
		if _, err := netip.ParseAddr(h); err != nil {
			m[strings.ToLower(h)] = true
		}
	}
	return m
}

// guard admits a request to h at lvl: the Host and Origin checks, the
// peer check for the profiler, the token, and for control a JSON body (a
// form a browser could post without asking is not one).
func (s *Server) guard(lvl level, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rf := s.admit(lvl, r); rf != nil {
			s.log.Warn("admin request refused", "reason", rf.reason, "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			if rf.code == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="switchboard"`)
			}
			writeJSON(w, rf.code, map[string]string{"error": rf.reason})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// admit returns why r may not go on at lvl, or nil.
func (s *Server) admit(lvl level, r *http.Request) *refusal {
	if err := s.checkHost(r); err != nil {
		return &refusal{http.StatusMisdirectedRequest, err.Error()}
	}
	if err := checkOrigin(r); err != nil {
		return &refusal{http.StatusForbidden, err.Error()}
	}
	if lvl == levelProfile && !loopbackPeer(r) {
		return &refusal{http.StatusForbidden, "the profiler answers loopback peers only"}
	}
	if rf := s.authorize(lvl, r); rf != nil {
		return rf
	}
	if lvl == levelControl {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			return &refusal{http.StatusUnsupportedMediaType, "a control request's body must be Content-Type: application/json"}
		}
	}
	return nil
}

// authorize checks the bearer token (RFC 6750) for lvl.
func (s *Server) authorize(lvl level, r *http.Request) *refusal {
	got, sent := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
	isControl := sent && s.tok.hasControl && subtle.ConstantTimeCompare(sum[:], s.tok.control[:]) == 1
	isRead := sent && s.tok.hasRead && subtle.ConstantTimeCompare(sum[:], s.tok.read[:]) == 1
	if lvl == levelControl {
		switch {
		case !s.tok.hasControl:
			return &refusal{http.StatusForbidden, "the control endpoints are off: the node has no control token (admin.token_file)"}
		case isControl:
			return nil
		case isRead:
			return &refusal{http.StatusForbidden, "the read-only token cannot change state"}
		}
		return &refusal{http.StatusUnauthorized, "missing or wrong bearer token"}
	}
	switch {
	case isControl || isRead:
		return nil
	case r.Header.Get("Authorization") == "" && !s.tok.hasRead && loopbackPeer(r):
		return nil // reads are open on loopback without a read token
	}
	return &refusal{http.StatusUnauthorized, "missing or wrong bearer token"}
}

// checkHost accepts a Host header naming the listener itself: the
// address the request came in on, "localhost" on loopback, or one of
// the configured names, with the listener's port (80 if none is given).
// A page that a browser loads from a name rebound to this node carries
// that name, and is refused.
func (s *Server) checkHost(r *http.Request) error {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if la == nil {
		return errors.New("no local address to check the Host header against")
	}
	local, err := netip.ParseAddrPort(la.String())
	if err != nil {
		return fmt.Errorf("local address %s: %w", la, err)
	}
	name, port := r.Host, "80"
	if h, p, err := net.SplitHostPort(r.Host); err == nil {
		name, port = h, p
	}
	name = strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || uint16(p) != local.Port() {
		return fmt.Errorf("Host %q is not this listener's address", r.Host)
	}
	if a, err := netip.ParseAddr(name); err == nil && a.WithZone("").Unmap() == local.Addr().WithZone("").Unmap() {
		return nil
	}
	if strings.EqualFold(name, "localhost") && local.Addr().Unmap().IsLoopback() {
		return nil
	}
	if name != "" && s.hosts[strings.ToLower(name)] {
		return nil
	}
	return fmt.Errorf("Host %q is not this listener's address nor one of admin.host_names", r.Host)
}

// checkOrigin refuses a request a browser marks as coming from another
// site: an Origin (RFC 6454) other than the Host itself, or a
// Sec-Fetch-Site other than same-origin or none.
func checkOrigin(r *http.Request) error {
	if v := r.Header.Get("Sec-Fetch-Site"); v != "" && v != "same-origin" && v != "none" {
		return fmt.Errorf("cross-origin request (Sec-Fetch-Site: %s)", v)
	}
	origins := r.Header.Values("Origin")
	switch len(origins) {
	case 0:
		return nil
	case 1:
	default:
		return errors.New("more than one Origin header")
	}
	u, err := url.Parse(origins[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("cross-origin request (Origin %q)", origins[0])
	}
	return nil
}

// loopbackPeer reports whether r comes from a loopback address.
func loopbackPeer(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// handlePprof adds the profiler's endpoints to mux.
func (s *Server) handlePprof(mux *http.ServeMux) {
	for path, h := range map[string]http.HandlerFunc{
		"/debug/pprof/":        pprof.Index, // and the named profiles: heap, goroutine, …
		"/debug/pprof/cmdline": pprof.Cmdline,
		"/debug/pprof/profile": pprof.Profile,
		"/debug/pprof/symbol":  pprof.Symbol,
		"/debug/pprof/trace":   pprof.Trace,
	} {
		mux.Handle("GET "+path, s.guard(levelProfile, h))
	}
}
