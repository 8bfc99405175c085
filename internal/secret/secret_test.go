package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const testValue = "s3cret-Pa55word"

// TestStringNeverPrints prints a String, alone and inside a struct, every
// way a program might, and fails if the value shows.
func TestStringNeverPrints(t *testing.T) {
	s := String(testValue)
	holder := struct {
		User     string
		Password String
	}{"alice", s}
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
		fmt.Fprintf(&out, verb+"\n", s)
		fmt.Fprintf(&out, verb+"\n", holder)
		fmt.Fprintf(&out, verb+"\n", &holder)
	}
	fmt.Fprintln(&out, s)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("x", "pw", s, "holder", holder)
	slog.New(slog.NewTextHandler(&out, nil)).Info("x", "pw", s, slog.Any("holder", &holder))
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	if strings.Contains(out.String(), testValue) || strings.Contains(strings.ToLower(out.String()), fmt.Sprintf("%x", testValue)) {
		t.Fatalf("value printed:\n%s", out.String())
	}
	if got := fmt.Sprint(s); got != "***" {
		t.Errorf("Sprint = %q, want ***", got)
	}
	if string(s) != testValue {
		t.Errorf("string(s) = %q, want the value", string(s))
	}
}

func TestLocal(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"LocalHost", true},
		{"127.0.0.1", true},
		{"127.45.6.7", true},
		{"::1", true},
		{"[::1]", true},
		{"::ffff:127.0.0.1", true},
		{"", false},
		{"0.0.0.0", false},
		{"::", false},
		{"10.0.0.1", false},
		{"[2001:db8::1]", false},
		{"ldap.example.org", false},
		{"localhost.example.org", false},
		{"127.0.0.1:389", false}, // a port is not a host
	}
	for _, tt := range tests {
		if got := Local(tt.host); got != tt.want {
			t.Errorf("Local(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}
