// Package route is the small vocabulary shared by the session core (router)
// and the user maps (ldapmap, the file map): what a lookup returns and the
// errors it may fail with. It imports nothing of the project, so leaves and
// the core can both depend on it without depending on each other.
package route

import (
	"context"
	"errors"
	"time"
)

// Errors a Mapper returns. Callers classify with errors.Is; the wrapped text
// is for logs only and never reaches a client.
var (
	// ErrUnknownUser: no entry matches the login name. The client gets the
	// same answer as for a wrong password, after the same delay.
	ErrUnknownUser = errors.New("route: unknown user")
	// ErrAmbiguous: more than one entry matches. A configuration error in
	// the directory, logged loudly; the login is refused as unavailable.
	ErrAmbiguous = errors.New("route: more than one entry matches")
	// ErrUnavailable: the map cannot be asked (LDAP down) and no cached
	// answer may be served. The client gets [UNAVAILABLE] at once.
	ErrUnavailable = errors.New("route: user map unavailable")
	// ErrNoHost: the entry exists but carries no host value.
	ErrNoHost = errors.New("route: entry has no host")
)

// Result is where a user's mailbox lives.
type Result struct {
	// Hosts are the values of the host attribute, primary first, then
	// standbys in order. They are names, to be resolved by a host map.
	Hosts []string
	// DN is the matching entry's DN (LDAP) or "file:line" (file map).
	DN string
	// Source says where the answer came from: "ldap", "file", "cache",
	// or "stale" (a cached answer served past its TTL because the
	// directory is unreachable).
	Source string
	// Fetched is when the answer was read from its source.
	Fetched time.Time
}

// A Mapper turns a login name into a Result.
type Mapper interface {
	Lookup(ctx context.Context, user string) (Result, error)
}

// MapperFunc adapts a function to the Mapper interface.
type MapperFunc func(ctx context.Context, user string) (Result, error)

// Lookup calls f(ctx, user).
func (f MapperFunc) Lookup(ctx context.Context, user string) (Result, error) { return f(ctx, user) }

// Invalidator is implemented by mappers that cache: Invalidate drops what
// they hold for user, so the next Lookup asks the source again.
type Invalidator interface {
	Invalidate(user string)
}
