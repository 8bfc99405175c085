// Package webmail proves the webmail connection cache with a real client
// and holds the pieces its integration tests and the browser benchmark
// (bench/webmail) share.
//
// The real client is Roundcube's own IMAP library, rcube_imap_generic from
// the Debian package roundcube-core, driven by php-cli through
// rcdriver.php (embedded): each iteration does what one Roundcube page
// request does (connect, log in, list folders, select INBOX, sort, fetch a
// few headers and one body, log out) and reports it as a JSON line, which
// [Driver.Run] parses into an [Iteration].
//
// Around it:
//   - [StartImapproxy] runs a private up-imapproxy (Debian package
//     imapproxy), the connection cache webmails used before, as the
//     anchor to compare with;
//   - [StartSwitchboard] runs "switchboard serve" with a cached webmail
//     listener ([[listen]] cache = true) in front of the testbed;
//   - [CountLogins] counts a Dovecot backend's logins in its log, the
//     backend's view of what a cache saves.
//
// Typical use in a test:
//
//	d := webmail.Driver{}
//	its, err := d.Run(ctx, webmail.Target{Addr: mx1.IMAPAddr, User: u, Password: p}, 10)
//	// its[i].Commands, its[i].Capabilities, its[i].Messages …
//
// Everything listens on loopback addresses only. Passwords reach php-cli on
// its standard input, never on a command line, in a file or in a log.
package webmail
