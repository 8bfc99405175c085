package gate

import (
	"context"
	"errors"
	"fmt"
	"time"

	"switchboard/route"
)

// resolveTimeout bounds the lookup of a held name's account.
const resolveTimeout = 5 * time.Second

// Holder sets and releases holds: *Local, *cluster.Cluster.
type Holder interface {
	Hold(user string, held bool, ttl time.Duration) error
}

// AccountHolds returns a Holder that holds (or releases) a name and also
// the account it names, as mapper finds it (route.AccountKey of its
// entry): a hold set by one of a user's names (as `switchboard hold`
// and mailbox moves set them) then holds logins under every other name
// of the account too. A name the map does not know is held by name only;
// a map that cannot be asked fails the hold, since a hold that covers
// fewer names than asked is worse than none.
func AccountHolds(h Holder, mapper route.Mapper) Holder {
	return accountHolds{h: h, mapper: mapper}
}

type accountHolds struct {
	h      Holder
	mapper route.Mapper
}

func (a accountHolds) Hold(user string, held bool, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	res, err := a.mapper.Lookup(ctx, user)
	cancel()
	switch {
	case errors.Is(err, route.ErrUnknownUser):
		return a.h.Hold(user, held, ttl)
	case err != nil && !held:
		// Release the name anyway; the account's hold lapses by its TTL.
		if herr := a.h.Hold(user, held, ttl); herr != nil {
			return herr
		}
		return fmt.Errorf("gate: release %s: account not found: %w", user, err)
	case err != nil:
		return fmt.Errorf("gate: hold %s: look up its account: %w", user, err)
	}
	if err := a.h.Hold(user, held, ttl); err != nil {
		return err
	}
	return a.h.Hold(route.AccountKey(res.DN, user), held, ttl)
}
