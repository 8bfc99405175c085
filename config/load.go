package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// Error is one problem in a configuration file. Load returns them joined
// with errors.Join, sorted by line; errors.As finds the first.
type Error struct {
	File string
	Line int    // 1-based; 0 when the problem is the file itself
	Col  int    // 1-based, for syntax errors; otherwise 0
	Key  string // the key path, e.g. "listen[1].address"; may be empty
	Msg  string
}

// Error formats e as "file:line: key: message", the form editors and
// compilers use, with the column after the line for syntax errors.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
		if e.Col > 0 {
			b.WriteString(":" + strconv.Itoa(e.Col))
		}
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads, decodes and validates the configuration file at path. It
// reports every problem it finds, each as an *Error naming the file, the
// line and the key, joined with errors.Join and sorted by line. Syntax and
// type errors stop decoding, so they come alone.
//
// Relative file names in the configuration are resolved against the
// directory of path. Secrets named by *_file keys are read.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return parse(path, string(data))
}

// parse is Load without the reading.
func parse(path, data string) (*Config, error) {
	cfg := Default()
	md, err := toml.Decode(data, cfg)
	if err != nil {
		return nil, decodeError(path, data, err)
	}
	cfg.File = path
	cfg.keys = scanKeys(data)
	c := &checker{file: path, keys: cfg.keys}

	c.unknownKeys(md.Undecoded())
	dropAbsent(cfg, &md)
	cfg.setElementDefaults()
	cfg.resolvePaths(filepath.Dir(path))
	cfg.validate(c)
	return cfg, c.err()
}

// typeError matches the errors BurntSushi/toml returns, as plain strings,
// for a value of the wrong type.
var typeError = regexp.MustCompile(`^toml: line (\d+) \(last key "(.*)"\): (.*)$`)

// decodeError turns an error of the TOML library into an *Error that keeps
// its line (and column, for syntax errors) and the key it concerns.
func decodeError(path, data string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		e := &Error{File: path, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message}
		if pe.Position.Start <= len(data) {
			// The library sets the column only for some errors; derive it
			// from the byte offset it always sets.
			e.Col = pe.Position.Start - strings.LastIndexByte(data[:pe.Position.Start], '\n')
		}
		return e
	}
	if m := typeError.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := m[2]
		// The library's key has no array indices: find the written key
		// on that line, which has them.
		for _, kl := range scanKeys(data).order {
			if kl.line == line && unindexed(kl.path) == key {
				key = kl.path
			}
		}
		return &Error{File: path, Line: line, Key: key, Msg: typeMessage(m[3])}
	}
	return &Error{File: path, Msg: err.Error()}
}

var (
	incompatible = regexp.MustCompile(`^incompatible types: TOML value has type (\S+); destination has type (\S+)$`)
	mismatch     = regexp.MustCompile(`^type mismatch for \S+: expected (\S+) but found (\S+)$`)
)

// typeMessage rewords the TOML library's type errors in the terms of the
// file: "wrong type: a string, but an integer is needed".
func typeMessage(msg string) string {
	if m := incompatible.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("wrong type: %s, but %s is needed", typeName(m[1]), typeName(m[2]))
	}
	if m := mismatch.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("wrong type: %s, but %s is needed", typeName(m[2]), typeName(m[1]))
	}
	return msg
}

// typeName names a type of the TOML library's messages for an operator.
func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "map"), t == "table":
		return "a table"
	case strings.HasPrefix(t, "[]"), t == "slice", t == "array":
		return "an array"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"), t == "integer":
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a float"
	case t == "bool", t == "boolean":
		return "a boolean"
	case t == "string":
		return "a string"
	case strings.Contains(t, "Time") || strings.Contains(t, "time"):
		return "a date"
	}
	return t
}

// dropAbsent sets to nil each optional table (a pointer field of Config)
// that the file does not have, so that its defaults do not make it look
// configured.
func dropAbsent(cfg *Config, md *toml.MetaData) {
	rv := reflect.ValueOf(cfg).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rv.Field(i)
		if f.Kind() != reflect.Pointer {
			continue
		}
		if name := tomlName(rt.Field(i)); name != "" && !md.IsDefined(name) {
			f.SetZero()
		}
	}
}

// tomlName returns the TOML key of a struct field, or "" if it has none.
func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		return f.Name
	}
	return name
}

// setElementDefaults sets the defaults of array elements, which Default
// cannot hold.
func (cfg *Config) setElementDefaults() {
	for i := range cfg.Listen {
		l := &cfg.Listen[i]
		if l.TLS == "" {
			l.TLS = TLSStartTLS
		}
		if l.Name == "" && l.Protocol != "" {
			if _, port, err := splitPort(l.Address); err == nil {
				l.Name = l.Protocol + "-" + strconv.Itoa(port)
			}
		}
	}
}

// resolvePaths makes relative file names absolute against dir.
func (cfg *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if cfg.TLS != nil {
		abs(&cfg.TLS.Cert)
		abs(&cfg.TLS.Key)
		for i := range cfg.TLS.Extra {
			abs(&cfg.TLS.Extra[i].Cert)
			abs(&cfg.TLS.Extra[i].Key)
		}
	}
	abs(&cfg.Backend.CAFile)
	abs(&cfg.Map.File)
	if cfg.LDAP != nil {
		abs(&cfg.LDAP.CAFile)
		abs(&cfg.LDAP.BindPasswordFile)
	}
	if cfg.Cluster != nil {
		abs(&cfg.Cluster.KeyringFile)
	}
	if cfg.Admin != nil {
		abs(&cfg.Admin.TokenFile)
		abs(&cfg.Admin.ReadTokenFile)
	}
	if cfg.Move != nil {
		abs(&cfg.Move.BindPasswordFile)
		abs(&cfg.Move.DoveadmPasswordFile)
		abs(&cfg.Move.DoveadmCAFile)
	}
}

// checker collects the problems of one file.
type checker struct {
	file string
	keys *keyLines
	errs []*Error
}

// errorf records a problem with key, at the line where key (or, if it is
// not written, its nearest written ancestor) is.
func (c *checker) errorf(key, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: c.keys.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// errorAt records a problem with key at the line of another key, for a
// key that is missing but required by what is written at at.
func (c *checker) errorAt(at, key, format string, args ...any) {
	c.errs = append(c.errs, &Error{File: c.file, Line: c.keys.line(at), Key: key, Msg: fmt.Sprintf(format, args...)})
}

// err returns the problems joined and sorted by line, or nil.
func (c *checker) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int { return a.Line - b.Line })
	errs := make([]error, len(c.errs))
	for i, e := range c.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// unknownKeys reports the keys the configuration has no field for. Below
// an unknown table, only the table is reported.
func (c *checker) unknownKeys(undecoded []toml.Key) {
	if len(undecoded) == 0 {
		return
	}
	unknown := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		unknown[k.String()] = true
	}
	top := func(path string) bool {
		for p := parent(path); p != ""; p = parent(p) {
			if unknown[unindexed(p)] {
				return false
			}
		}
		return true
	}
	reported := make(map[string]bool)
	for _, kl := range c.keys.order {
		u := unindexed(kl.path)
		if !unknown[u] || reported[kl.path] || !top(kl.path) {
			continue
		}
		reported[kl.path] = true
		reported[u] = true
		c.errorf(kl.path, "unknown key")
	}
	// Keys the scan cannot see, inside inline tables.
	for _, k := range undecoded {
		if p := k.String(); !reported[p] && top(p) {
			reported[p] = true
			c.errorf(p, "unknown key")
		}
	}
}
