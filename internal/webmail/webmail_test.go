package webmail

import (
	"strings"
	"testing"
)

func TestParseIterations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		out     string
		want    int // iterations
		wantErr string
	}{
		{"two", `{"i":1,"ok":true,"commands":7,"caps":["IMAP4REV1","SORT"],"messages":[{"uid":1,"subject":"s"}]}` + "\n" +
			`{"i":2,"ok":false,"errors":["connect: NO"]}` + "\n", 2, ""},
		{"blank lines", "\n" + `{"i":1,"ok":true}` + "\n\n", 1, ""},
		{"empty", "", 0, "printed nothing"},
		{"garbage", "PHP Warning: x\n", 0, "rcdriver.php output"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			its, err := parseIterations([]byte(tc.out))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(its) != tc.want {
				t.Fatalf("got %d iterations, %v; want %d", len(its), err, tc.want)
			}
		})
	}
	its, _ := parseIterations([]byte(`{"i":1,"ok":true,"commands":7,"caps":["IMAP4REV1","SORT"],"messages":[{"uid":4,"subject":"s"}]}`))
	if it := its[0]; it.Commands != 7 || !it.HasCapability("sort") || it.HasCapability("ESEARCH") || it.Messages[0].UID != 4 {
		t.Errorf("decoded %+v", it)
	}
}

func TestCountLogins(t *testing.T) {
	log := `2026-01-01 00:00:00 imap-login: Info: Login: user=<alice@example.org> method=PLAIN rip=127.1.2.3
2026-01-01 00:00:00 imap-login: Info: Login: user=<alice@example.org.evil> method=PLAIN rip=127.1.2.3
2026-01-01 00:00:00 pop3-login: Info: Login: user=<alice@example.org> method=PLAIN rip=127.1.2.3
2026-01-01 00:00:00 imap-login: Info: Disconnected: user=<alice@example.org> (auth failed, 1 attempts)
2026-01-01 00:00:01 imap-login: Info: Login: user=<bob@example.org> method=PLAIN rip=127.1.2.3
`
	for _, tc := range []struct {
		user string
		want int
	}{
		{"alice@example.org", 1},
		{"bob@example.org", 1},
		{"carol@example.org", 0},
		{"", 3},
	} {
		if got := CountLogins(log, tc.user); got != tc.want {
			t.Errorf("CountLogins(%q) = %d, want %d", tc.user, got, tc.want)
		}
	}
}

func TestMetricValueAndCacheStates(t *testing.T) {
	metrics := `# TYPE switchboard_conncache_hits_total counter
switchboard_conncache_hits_total 9
switchboard_conncache_evictions_total{reason="dropped"} 2
switchboard_conncache_evictions_total{reason="idle"} 0
`
	for _, tc := range []struct {
		series string
		want   float64
		ok     bool
	}{
		{"switchboard_conncache_hits_total", 9, true},
		{`switchboard_conncache_evictions_total{reason="dropped"}`, 2, true},
		{`switchboard_conncache_evictions_total{reason="lru"}`, 0, false},
		{"switchboard_conncache_hits", 0, false},
	} {
		if v, ok := MetricValue(metrics, tc.series); v != tc.want || ok != tc.ok {
			t.Errorf("MetricValue(%s) = %v, %v; want %v, %v", tc.series, v, ok, tc.want, tc.ok)
		}
	}
	log := `time=x level=INFO msg=session cid=1 cache=miss bytes_in=1
time=x level=INFO msg=session cid=2 cache=hit bytes_in=1
time=x level=INFO msg=session cid=3 cache=hit bytes_in=1
time=x level=INFO msg=listening cache=hit
`
	if st := CacheStates(log); st["hit"] != 2 || st["miss"] != 1 || len(st) != 2 {
		t.Errorf("CacheStates = %v", st)
	}
}
