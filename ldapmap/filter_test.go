package ldapmap

import (
	"errors"
	"strings"
	"testing"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

func TestFilterTemplateExpand(t *testing.T) {
	tests := []struct {
		name, tmpl, user, want string
		ok                     bool
	}{
		{"default", DefaultFilter, "alice@example.org", "(&(mail=alice@example.org)(status=active))", true},
		{"local and domain", "(&(uid=%u)(domain=%d))", "alice@example.org", "(&(uid=alice)(domain=example.org))", true},
		{"last at splits", "(&(uid=%u)(domain=%d))", `"a@b"@example.org`, `(&(uid="a@b")(domain=example.org))`, true},
		{"local without domain", "(uid=%u)", "alice", "(uid=alice)", true},
		{"domain needed but missing", "(&(uid=%u)(domain=%d))", "alice", "", false},
		{"percent literal", "(&(mail=%s)(note=100%%))", "bob@x.org", "(&(mail=bob@x.org)(note=100%))", true},
		{"verb twice", "(|(mail=%s)(alias=%s))", "bob@x.org", "(|(mail=bob@x.org)(alias=bob@x.org))", true},
		{"escapes star", DefaultFilter, "*", `(&(mail=\2a)(status=active))`, true},
		{"escapes parens", DefaultFilter, ")(uid=*", `(&(mail=\29\28uid=\2a)(status=active))`, true},
		{"escapes in parts", "(&(uid=%u)(domain=%d))", "a*@b)", `(&(uid=a\2a)(domain=b\29))`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ft, err := parseFilterTemplate(tt.tmpl)
			if err != nil {
				t.Fatalf("parseFilterTemplate(%q): %v", tt.tmpl, err)
			}
			got, ok := ft.expand(tt.user)
			if ok != tt.ok || got != tt.want {
				t.Errorf("expand(%q) = %q, %v; want %q, %v", tt.user, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestFilterTemplateErrors(t *testing.T) {
	tests := []struct{ name, tmpl, want string }{
		{"no verb", "(mail=alice@example.org)", "no %s"},
		{"unknown verb", "(mail=%x)", "unknown %x"},
		{"trailing percent", "(mail=%s)%", "trailing %"},
		{"unbalanced", "(&(mail=%s)(status=active)", "filter template"},
		{"no parens", "mail=%s", "does not start"},
		{"extra after", "(mail=%s))", "extra at end"},
		{"bad literal escape", `(&(mail=%s)(cn=\zz))`, "invalid characters for escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFilterTemplate(tt.tmpl)
			if err == nil {
				t.Fatalf("parseFilterTemplate(%q) succeeded", tt.tmpl)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestValidateLogin(t *testing.T) {
	tests := []struct {
		name, user string
		ok         bool
	}{
		{"plain", "alice@example.org", true},
		{"no domain", "alice", true},
		{"utf8", "jörg@bücher.example", true},
		{"space", "alice smith@example.org", true},
		{"max length", strings.Repeat("a", 64) + "@" + strings.Repeat("b", 255), true},
		{"too long", strings.Repeat("a", 321), false},
		{"empty", "", false},
		{"nul", "alice\x00@example.org", false},
		{"newline", "alice\n@example.org", false},
		{"tab", "alice\t@example.org", false},
		{"del", "alice\x7f", false},
		{"c1 control", "alice\u0085", false},
		{"invalid utf8", "alice\xff@example.org", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateLogin(tt.user)
			if (err == nil) != tt.ok {
				t.Fatalf("validateLogin(%q) = %v, want ok=%v", tt.user, err, tt.ok)
			}
			if err != nil {
				if tt.user != "" && strings.Contains(err.Error(), tt.user) {
					t.Errorf("error %q quotes the login", err)
				}
				if !errors.Is(invalidLogin(err), route.ErrUnknownUser) {
					t.Errorf("invalidLogin does not wrap route.ErrUnknownUser")
				}
			}
		})
	}
}

// equalityValues walks a compiled filter and returns, per attribute, the
// assertion values of its equality matches. It fails on any other kind of
// filter item: an injection would show up as a presence or substring match
// or as an extra clause.
func equalityValues(t testing.TB, p *ber.Packet, out map[string][]string) {
	t.Helper()
	switch p.Tag {
	case ldap.FilterAnd, ldap.FilterOr:
		for _, c := range p.Children {
			equalityValues(t, c, out)
		}
	case ldap.FilterEqualityMatch:
		if len(p.Children) != 2 {
			t.Fatalf("equality match with %d children", len(p.Children))
		}
		attr := string(p.Children[0].Data.Bytes())
		out[attr] = append(out[attr], string(p.Children[1].Data.Bytes()))
	default:
		t.Fatalf("unexpected filter item %q (tag %d)", ldap.FilterMap[uint64(p.Tag)], p.Tag)
	}
}

// TestFilterInjection shows that logins built to widen the search compile
// to the same two equality clauses as a plain login, with the login as the
// literal assertion value.
func TestFilterInjection(t *testing.T) {
	ft, err := parseFilterTemplate(DefaultFilter)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, user string }{
		{"star", "*"},
		{"star suffix", "ali*"},
		{"close and reopen", ")(uid=*"},
		{"or injection", "x)(|(mail=*)"},
		{"status override", "alice@example.org)(status=*"},
		{"backslash", `\`},
		{"fake escape", `\2a`},
		{"nul", "alice\x00@example.org"},
		{"non-ascii", "jörg@bücher.example"},
		{"parens only", "()"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, ok := ft.expand(tt.user)
			if !ok {
				t.Fatal("expand failed")
			}
			p, err := ldap.CompileFilter(f)
			if err != nil {
				t.Fatalf("CompileFilter(%q): %v", f, err)
			}
			if p.Tag != ldap.FilterAnd || len(p.Children) != 2 {
				t.Fatalf("filter %q is not a two-clause AND", f)
			}
			got := map[string][]string{}
			equalityValues(t, p, got)
			if len(got["mail"]) != 1 || got["mail"][0] != tt.user {
				t.Errorf("filter %q: mail values %q, want exactly %q", f, got["mail"], tt.user)
			}
			if len(got["status"]) != 1 || got["status"][0] != "active" {
				t.Errorf("filter %q: status values %q, want [active]", f, got["status"])
			}
		})
	}
}

// FuzzFilter checks that every filter built from any input compiles, and
// that its equality assertions carry the input (or its parts) unchanged.
func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		"alice@example.org", "*", ")(uid=*", `\`, "\x00", "jörg@bücher.example",
		"a@b@c", "@", "", "\xff\xfe", "\\2a", "(&(mail=*))", "\uFFFD",
	} {
		f.Add(s)
	}
	whole, err := parseFilterTemplate(DefaultFilter)
	if err != nil {
		f.Fatal(err)
	}
	parts, err := parseFilterTemplate("(&(uid=%u)(domain=%d)(x=%%))")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, user string) {
		fl, _ := whole.expand(user)
		p, err := ldap.CompileFilter(fl)
		if err != nil {
			t.Fatalf("CompileFilter(%q) for %q: %v", fl, user, err)
		}
		got := map[string][]string{}
		equalityValues(t, p, got)
		if len(got["mail"]) != 1 || got["mail"][0] != user {
			t.Fatalf("filter %q: mail values %q, want %q", fl, got["mail"], user)
		}

		fl, ok := parts.expand(user)
		if !ok {
			if _, d := splitLogin(user); d != "" {
				t.Fatalf("expand(%q) failed with a domain", user)
			}
			return
		}
		p, err = ldap.CompileFilter(fl)
		if err != nil {
			t.Fatalf("CompileFilter(%q) for %q: %v", fl, user, err)
		}
		got = map[string][]string{}
		equalityValues(t, p, got)
		local, domain := splitLogin(user)
		if len(got["uid"]) != 1 || got["uid"][0] != local || len(got["domain"]) != 1 || got["domain"][0] != domain {
			t.Fatalf("filter %q: got %q, want uid %q domain %q", fl, got, local, domain)
		}
		if len(got["x"]) != 1 || got["x"][0] != "%" {
			t.Fatalf("filter %q: x values %q, want %%", fl, got["x"])
		}
	})
}

// TestCheckFilter checks the exported check the configuration uses: the
// same verdicts as NewLDAP, errors that start with the quoted template
// (the configuration prefixes the key) and never with "filter template".
func TestCheckFilter(t *testing.T) {
	tests := []struct{ tmpl, want string }{
		{DefaultFilter, ""},
		{"(&(uid=%u)(domain=%d))", ""},
		{"(mail=%s)(x=100%%)", `"(mail=%s)(x=100%%)" does not compile`},
		{"(mail=alice)", `"(mail=alice)" has no %s`},
		{"(uid=%x)", `"(uid=%x)": unknown %x`},
		{"(uid=%u)%", `"(uid=%u)%": trailing %`},
		{"(&(mail=%s)", `"(&(mail=%s)" does not compile (with sample.user@example.org:`},
	}
	for _, tt := range tests {
		err := CheckFilter(tt.tmpl)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckFilter(%q) = %v, want nil", tt.tmpl, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tt.want)):
			t.Errorf("CheckFilter(%q) = %v, want an error starting %q", tt.tmpl, err, tt.want)
		}
		_, perr := parseFilterTemplate(tt.tmpl)
		if (perr == nil) != (err == nil) {
			t.Errorf("parseFilterTemplate(%q) = %v, CheckFilter = %v: the verdicts differ", tt.tmpl, perr, err)
		}
	}
}
