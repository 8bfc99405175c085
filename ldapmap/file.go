package ldapmap

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"switchboard/route"
)

// maxFileErrors bounds how many problems one parse reports.
const maxFileErrors = 20

// File is a route.Mapper over a plain text map, for deployments without a
// directory and for the demo. One entry per line:
//
//	# comment, and blank lines, are ignored
//	alice@example.org   imap1 imap2     exact login: primary, then standbys
//	@example.net        imap3           any user of the domain
//	*                   imap4           everyone else
//
// Fields are separated by spaces or tabs; a field starting with "#" starts
// a comment. An exact login beats its domain, which beats the default.
// Keys are case-insensitive; a key given twice is an error. A key without
// "@" is a login without a domain and matches only exactly. It is safe for
// concurrent use.
type File struct {
	path string
	m    atomic.Pointer[fileMap]
}

// A fileMap is one parse of the file; it is never changed once loaded.
type fileMap struct {
	exact   map[string]route.Result
	domains map[string]route.Result
	def     *route.Result
}

// LoadFile reads and parses the map at path. The error names every bad
// line (up to 20) as path:line.
func LoadFile(path string) (*File, error) {
	m, err := parseFile(path)
	if err != nil {
		return nil, err
	}
	f := &File{path: path}
	f.m.Store(m)
	return f, nil
}

// Reload reads the file again. If the new contents are invalid, the map
// in use is kept and the error says why.
func (f *File) Reload() error {
	m, err := parseFile(f.path)
	if err != nil {
		return err
	}
	f.m.Store(m)
	return nil
}

// Lookup returns the hosts for user: the exact entry, else the entry of its
// domain, else the default. It fails with route.ErrUnknownUser when none
// applies or user is not a valid login name.
func (f *File) Lookup(_ context.Context, user string) (route.Result, error) {
	if err := validateLogin(user); err != nil {
		return route.Result{}, invalidLogin(err)
	}
	m := f.m.Load()
	key := strings.ToLower(user)
	if r, ok := m.exact[key]; ok {
		return r, nil
	}
	if _, domain := splitLogin(key); domain != "" {
		if r, ok := m.domains[domain]; ok {
			return r, nil
		}
	}
	if m.def != nil {
		return *m.def, nil
	}
	return route.Result{}, fmt.Errorf("ldapmap: file %s: lookup %q: %w", f.path, user, route.ErrUnknownUser)
}

// parseFile reads path and parses it, collecting every problem.
func parseFile(path string) (*fileMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ldapmap: %w", err)
	}
	fetched := time.Now()
	m := &fileMap{
		exact:   make(map[string]route.Result),
		domains: make(map[string]route.Result),
	}
	var errs []error
	bad := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s:%d: %s", path, line, fmt.Sprintf(format, args...)))
	}
	firstLine := make(map[string]int) // folded key -> line it was first seen on
	for i, line := range strings.Split(string(data), "\n") {
		if len(errs) >= maxFileErrors {
			errs = append(errs, fmt.Errorf("%s: too many errors", path))
			break
		}
		n := i + 1
		fields := strings.Fields(strings.TrimSuffix(line, "\r"))
		for j, fl := range fields {
			if strings.HasPrefix(fl, "#") {
				fields = fields[:j]
				break
			}
		}
		if len(fields) == 0 {
			continue
		}
		key := strings.ToLower(fields[0])
		hosts := fields[1:]
		if len(hosts) == 0 {
			bad(n, "%q has no host", fields[0])
			continue
		}
		if prev, ok := firstLine[key]; ok {
			bad(n, "duplicate entry %q (first at line %d)", fields[0], prev)
			continue
		}
		res := route.Result{
			Hosts:   hosts,
			DN:      fmt.Sprintf("%s:%d", path, n),
			Source:  "file",
			Fetched: fetched,
		}
		switch {
		case key == "*":
			m.def = &res
		case strings.Contains(key, "*"):
			bad(n, "%q: \"*\" is allowed only alone, as the default", fields[0])
			continue
		case strings.HasPrefix(key, "@"):
			domain := key[1:]
			if domain == "" || strings.Contains(domain, "@") {
				bad(n, "%q is not @domain", fields[0])
				continue
			}
			m.domains[domain] = res
		default:
			if err := validateLogin(key); err != nil {
				bad(n, "%v", err)
				continue
			}
			if local, domain := splitLogin(key); local == "" || (strings.Contains(key, "@") && domain == "") {
				bad(n, "%q is not user@domain", fields[0])
				continue
			}
			m.exact[key] = res
		}
		firstLine[key] = n
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("ldapmap: map file: %w", errors.Join(errs...))
	}
	return m, nil
}
