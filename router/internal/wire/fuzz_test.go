package wire

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// FuzzDecodePlain checks the SASL PLAIN decoder (RFC 4616) on any
// response line: it must not panic, a response it accepts has a user and
// a password without NUL, and encoding what it decoded gives back the
// same credentials.
func FuzzDecodePlain(f *testing.F) {
	for _, s := range []string{
		"AGFsaWNlAHNlY3JldA==",         // \0alice\0secret
		"Ym9iAGFsaWNlAHNlY3JldA==",     // bob\0alice\0secret
		"=",                            // empty response
		"",                             // nothing
		"AGFsaWNlAA==",                 // no password
		"AAA=",                         // \0\0
		"AGFsaWNlAHNlY3JldABleHRyYQ==", // four fields
		"not base64!",
		"AGFsaWNl\r\nAHNlY3JldA==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		c, err := DecodePlain(in)
		if err != nil {
			if c != nil {
				t.Fatalf("DecodePlain(%q) returned creds with error %v", in, err)
			}
			return
		}
		if c.User == "" || c.Pass == "" {
			t.Fatalf("DecodePlain(%q) accepted an empty user or password", in)
		}
		for _, s := range []string{c.Authz, c.User, c.Pass} {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("DecodePlain(%q): NUL inside a field", in)
			}
		}
		if len(c.Authz)+len(c.User)+len(c.Pass)+2 > base64.StdEncoding.DecodedLen(len(in)) {
			t.Fatalf("DecodePlain(%q): fields longer than the input holds", in)
		}
		enc := c.SASLPlain()
		c2, err := DecodePlain(string(enc))
		if err != nil {
			t.Fatalf("re-decoding %q: %v", enc, err)
		}
		if *c2 != *c {
			t.Fatalf("round trip of %q: got other credentials", in)
		}
		raw, _ := base64.StdEncoding.DecodeString(in)
		if !bytes.Equal(raw, []byte(c.Authz+"\x00"+c.User+"\x00"+c.Pass)) {
			t.Fatalf("DecodePlain(%q): fields are not the decoded message", in)
		}
	})
}
