package webmail

import (
	"strings"

	"switchboard/internal/testbed"
)

// loginLinePrefix starts the line Dovecot logs for each successful IMAP
// login (followed by the user in angle brackets).
const loginLinePrefix = "imap-login: Info: Login: user=<"

// CountLogins returns how many successful IMAP logins of user the Dovecot
// log text records (user "" counts everyone's).
func CountLogins(log, user string) int {
	if user == "" {
		return strings.Count(log, loginLinePrefix)
	}
	return strings.Count(log, loginLinePrefix+user+">")
}

// BackendLogins reads d's log and counts user's IMAP logins there.
func BackendLogins(d *testbed.Dovecot, user string) (int, error) {
	log, err := d.Log()
	if err != nil {
		return 0, err
	}
	return CountLogins(log, user), nil
}
