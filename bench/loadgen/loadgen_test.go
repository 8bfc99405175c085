package loadgen

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestHistQuantile(t *testing.T) {
	var h Hist
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 500 * time.Millisecond},
		{0.99, 990 * time.Millisecond},
		{1, 1000 * time.Millisecond},
	}
	for _, tt := range tests {
		got := h.Quantile(tt.q)
		if d := float64(got-tt.want) / float64(tt.want); d > 0.011 || d < -0.011 {
			t.Errorf("Quantile(%v) = %v, want %v ±1.1%%", tt.q, got, tt.want)
		}
	}
	var m Hist
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 2000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merged: count %d p50 %v, want 2000 and %v", m.Count(), m.Quantile(0.5), h.Quantile(0.5))
	}
}

func TestIMAPWaitLiterals(t *testing.T) {
	resp := "* 1 FETCH (BODY[] {5}\r\nhello)\r\n" +
		"* 2 FETCH (ENVELOPE (\"d\" {3}\r\nabc \"x\" {0}\r\n))\r\n" +
		"a1 OK done\r\n"
	c := &Conn{br: bufio.NewReader(strings.NewReader(resp))}
	if err := c.imapWait("a1", "FETCH"); err != nil {
		t.Fatal(err)
	}
	if c.Body != 8 {
		t.Errorf("Body = %d, want 8", c.Body)
	}
	c = &Conn{br: bufio.NewReader(strings.NewReader("a2 NO [AUTHENTICATIONFAILED] no\r\n"))}
	if err := c.imapWait("a2", "LOGIN"); err == nil {
		t.Error("NO completion: want error")
	}
}

func TestTargetAddr(t *testing.T) {
	tg := &Target{Name: "direct", PerHost: map[string]map[string]string{
		"mx1": {"imap/none": "127.1.1.1:143", "imap/implicit": "127.1.1.1:993"},
	}}
	u := &User{Host: "mx1"}
	if a, err := tg.Addr(u, IMAP, TLSStartTLS); err != nil || a != "127.1.1.1:143" {
		t.Errorf("starttls falls back to plaintext port: got %q, %v", a, err)
	}
	if _, err := tg.Addr(u, POP3, TLSNone); err == nil {
		t.Error("missing pop3 address: want error")
	}
	if tg.Supports(POP3, TLSNone) || !tg.Supports(IMAP, TLSImplicit) {
		t.Error("Supports is wrong")
	}
}
