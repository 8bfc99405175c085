// Package router is Switchboard's session core: it accepts IMAP and POP3
// clients, runs the login phase itself (greeting, CAPABILITY/CAPA,
// STARTTLS/STLS, ID, LOGIN, AUTHENTICATE PLAIN, USER/PASS, AUTH PLAIN),
// asks a route.Mapper where the user's mailbox lives, logs in to that
// backend with the client's own credentials while forwarding the client's
// address (IMAP ID x-originating-ip, RFC 2971 and Dovecot's forwarding
// fields; POP3 XCLIENT), hands the client the backend's answer, and then
// splices bytes both ways until either side is done.
//
// A Server is built with New and given listeners with Listen:
//
//	srv := router.New(&router.Options{Mapper: m, Hosts: hm, TLS: tlsConf})
//	addr, err := srv.Listen(router.ListenerConfig{Name: "imaps", Protocol: route.IMAP, Addr: ":993", TLS: router.TLSImplicit})
//	…
//	srv.Shutdown(ctx) // stop accepting, let sessions finish, then BYE them
//
// Every live session is registered under its user, so Kick can close a
// user's sessions with a BYE (a mailbox move, a route invalidation), and
// Options.Gate can hold or refuse a login before the backend is asked.
//
// The IMAP protocol is RFC 9051 and RFC 3501; POP3 is RFC 1939, with CAPA
// (RFC 2449), STLS (RFC 2595) and SASL (RFC 5034). Response codes follow
// RFC 5530 (IMAP) and RFC 3206 (POP3).
package router
