package ldapmap

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-ldap/ldap/v3"

	"switchboard/route"
)

// maxLoginLen bounds a login name in bytes: a 64-byte local part, "@" and a
// 255-byte domain (RFC 5321 section 4.5.3.1.1 and 4.5.3.1.2).
const maxLoginLen = 64 + 1 + 255

// DefaultFilter is the search filter template used when Options.Filter is
// empty.
const DefaultFilter = "(&(mail=%s)(status=active))"

// sampleLogin is the login a filter template is expanded with, by
// CheckFilter and NewLDAP, to check that the result compiles.
const sampleLogin = "sample.user@example.org"

// validateLogin reports why user cannot be a login name, or nil. It runs
// before any lookup, so that garbage never reaches the directory; callers
// wrap its error with route.ErrUnknownUser. The error never quotes the name.
func validateLogin(user string) error {
	switch {
	case user == "":
		return errors.New("empty login name")
	case len(user) > maxLoginLen:
		return fmt.Errorf("login name longer than %d bytes", maxLoginLen)
	case !utf8.ValidString(user):
		return errors.New("login name is not valid UTF-8")
	}
	for _, r := range user {
		// unicode.IsControl covers NUL, the rest of C0, DEL and C1.
		if unicode.IsControl(r) {
			return errors.New("login name contains a control character")
		}
	}
	return nil
}

// invalidLogin wraps a validateLogin failure as an unknown user.
func invalidLogin(err error) error {
	return fmt.Errorf("ldapmap: %w: %w", err, route.ErrUnknownUser)
}

// splitLogin splits a login at its last "@" (a quoted local part may hold
// an "@" of its own, RFC 5321 section 4.1.2). Without "@", the whole login
// is the local part and domain is empty.
func splitLogin(user string) (local, domain string) {
	i := strings.LastIndexByte(user, '@')
	if i < 0 {
		return user, ""
	}
	return user[:i], user[i+1:]
}

// A filterTemplate is a parsed Options.Filter. The verbs are:
//
//	%s  the whole login name
//	%u  the local part, before the last "@"
//	%d  the domain, after the last "@"
//	%%  a literal "%"
//
// Every substitution is escaped with ldap.EscapeFilter (RFC 4515 section 3).
type filterTemplate struct {
	text  string
	parts []filterPart
	// needDomain is set when the template uses %d: a login without a
	// domain then cannot be looked up.
	needDomain bool
	// size is the length of the literal parts, to size the builder.
	size int
}

// A filterPart is either literal text (verb 0) or a verb: 's', 'u' or 'd'.
type filterPart struct {
	lit  string
	verb byte
}

// CheckFilter checks a filter template as Options.Filter takes it: only
// the verbs above, at least one of %s, %u or %d (a filter without the
// login would map every user to one entry), and the expansion of a sample
// login, escaped as a lookup escapes it, must compile as an RFC 4515
// filter. The error quotes the template, never a login; NewLDAP reports
// the same errors, prefixed with "filter template".
func CheckFilter(text string) error {
	_, err := compileTemplate(text)
	return err
}

// parseFilterTemplate parses and checks a filter template (see
// CheckFilter).
func parseFilterTemplate(text string) (*filterTemplate, error) {
	t, err := compileTemplate(text)
	if err != nil {
		return nil, fmt.Errorf("filter template %w", err)
	}
	return t, nil
}

// compileTemplate is CheckFilter returning the parsed template. Its
// errors start with the quoted template.
func compileTemplate(text string) (*filterTemplate, error) {
	t := &filterTemplate{text: text}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, filterPart{lit: lit.String()})
			t.size += lit.Len()
			lit.Reset()
		}
	}
	verbs := 0
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		if i+1 == len(text) {
			return nil, fmt.Errorf("%q: trailing %%: write %%%% for a percent sign", text)
		}
		i++
		switch v := text[i]; v {
		case '%':
			lit.WriteByte('%')
		case 's', 'u', 'd':
			flush()
			t.parts = append(t.parts, filterPart{verb: v})
			verbs++
			if v == 'd' {
				t.needDomain = true
			}
		default:
			return nil, fmt.Errorf("%q: unknown %%%c, not a verb (want %%s, %%u, %%d or %%%%)", text, v)
		}
	}
	flush()
	if verbs == 0 {
		return nil, fmt.Errorf("%q has no %%s, %%u or %%d, so every login would match the same entries", text)
	}
	f, ok := t.expand(sampleLogin)
	if !ok {
		return nil, fmt.Errorf("%q: cannot expand the sample login %s", text, sampleLogin)
	}
	if _, err := ldap.CompileFilter(f); err != nil {
		return nil, fmt.Errorf("%q does not compile (with %s: %q): %w", text, sampleLogin, f, err)
	}
	return t, nil
}

// expand returns the filter for user. It reports false when the template
// needs a domain and user has none. user is not validated here.
func (t *filterTemplate) expand(user string) (string, bool) {
	local, domain := splitLogin(user)
	if t.needDomain && domain == "" {
		return "", false
	}
	var b strings.Builder
	b.Grow(t.size + 3*len(user))
	for _, p := range t.parts {
		switch p.verb {
		case 0:
			b.WriteString(p.lit)
		case 's':
			b.WriteString(ldap.EscapeFilter(user))
		case 'u':
			b.WriteString(ldap.EscapeFilter(local))
		case 'd':
			b.WriteString(ldap.EscapeFilter(domain))
		}
	}
	return b.String(), true
}
