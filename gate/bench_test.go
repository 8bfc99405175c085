package gate

import (
	"context"
	"testing"
	"time"

	"switchboard/route"
)

// BenchmarkSuccessfulLogin is the gate's share of a good login: both
// checks, Done and Ended, over a Local state with the default limits.
func BenchmarkSuccessfulLogin(b *testing.B) {
	g := New(NewLocal(time.Hour), &Options{IMAPSessions: 50, FailuresBeforeDelay: 5, FailuresBeforeRefuse: 20,
		SourceFailuresBeforeDelay: 10, SourceFailuresBeforeRefuse: 50, Logger: quiet()})
	ctx := context.Background()
	acct := route.AccountKey(aliceDN, "")
	b.ReportAllocs()
	for b.Loop() {
		l := route.Login{User: "alice@example.org", Protocol: route.IMAP, Client: clientA}
		if err := g.Admit(ctx, &l); err != nil {
			b.Fatal(err)
		}
		l.Account = acct
		if err := g.AdmitAccount(ctx, &l); err != nil {
			b.Fatal(err)
		}
		g.Done(&l, route.OutcomeOK)
		g.Ended(&l)
	}
}
