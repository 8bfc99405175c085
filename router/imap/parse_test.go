package imap

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func read(t testing.TB, in string, conts *int) (*Command, error) {
	r := &Reader{R: bufio.NewReaderSize(strings.NewReader(in), 256), MaxLiteral: 64}
	r.Continue = func() error { *conts++; return nil }
	return r.ReadCommand()
}

func TestReadCommand(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  *Command
		conts int
	}{
		{"capability", "a1 CAPABILITY\r\n", &Command{Tag: "a1", Name: "CAPABILITY"}, 0},
		{"lower case", "x noop\r\n", &Command{Tag: "x", Name: "NOOP"}, 0},
		{"bare lf", "x LOGOUT\n", &Command{Tag: "x", Name: "LOGOUT"}, 0},
		{"login atoms", "a LOGIN alice@example.org s3cret\r\n",
			&Command{Tag: "a", Name: "LOGIN", Args: []string{"alice@example.org", "s3cret"}}, 0},
		{"login quoted", `a LOGIN "alice" "p a\"ss\\w"` + "\r\n",
			&Command{Tag: "a", Name: "LOGIN", Args: []string{"alice", `p a"ss\w`}}, 0},
		{"login literal", "a LOGIN {5}\r\nalice {4}\r\nx yz\r\n",
			&Command{Tag: "a", Name: "LOGIN", Args: []string{"alice", "x yz"}, Literal: true}, 2},
		{"login literal plus", "a LOGIN alice {6+}\r\nmot\"\r\n\r\n",
			&Command{Tag: "a", Name: "LOGIN", Args: []string{"alice", "mot\"\r\n"}, Literal: true}, 0},
		{"login utf8 quoted", "a LOGIN bob \"pässwörd\"\r\n",
			&Command{Tag: "a", Name: "LOGIN", Args: []string{"bob", "pässwörd"}}, 0},
		{"authenticate", "a AUTHENTICATE plain\r\n",
			&Command{Tag: "a", Name: "AUTHENTICATE", Args: []string{"PLAIN"}}, 0},
		{"authenticate ir", "a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
			&Command{Tag: "a", Name: "AUTHENTICATE", Args: []string{"PLAIN", "AGFsaWNlAHNlY3JldA=="}}, 0},
		{"authenticate empty ir", "a AUTHENTICATE PLAIN =\r\n",
			&Command{Tag: "a", Name: "AUTHENTICATE", Args: []string{"PLAIN", "="}}, 0},
		{"id nil", "a ID NIL\r\n", &Command{Tag: "a", Name: "ID"}, 0},
		{"id params", `a ID ("name" "Thunderbird" "version" NIL)` + "\r\n",
			&Command{Tag: "a", Name: "ID", Args: []string{"name", "Thunderbird", "version", ""}}, 0},
		{"unknown", "a SELECT INBOX {10}\r\n", &Command{Tag: "a", Name: "SELECT"}, 0},
		{"tag with bracket", "a] NOOP\r\n", &Command{Tag: "a]", Name: "NOOP"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conts := 0
			got, err := read(t, tt.in, &conts)
			if err != nil {
				t.Fatalf("ReadCommand: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			if conts != tt.conts {
				t.Fatalf("continuations = %d, want %d", conts, tt.conts)
			}
		})
	}
}

func TestReadCommandErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		tag   string
		code  string
		fatal bool
	}{
		{"no tag", " NOOP\r\n", "", "", false},
		{"plus in tag", "a+ NOOP\r\n", "", "", false},
		{"no command", "a\r\n", "a", "", false},
		{"login one arg", "a LOGIN alice\r\n", "a", "", false},
		{"login three args", "a LOGIN alice pw extra\r\n", "a", "", false},
		{"unterminated quote", "a LOGIN \"alice pw\r\n", "a", "", false},
		{"bad escape", `a LOGIN "al\ice" pw` + "\r\n", "a", "", false},
		{"literal too big", "a LOGIN {65}\r\n", "a", "TOOBIG", false},
		{"literal plus too big", "a LOGIN {65+}\r\n", "a", "TOOBIG", true},
		{"literal huge", "a LOGIN {4294967296}\r\n", "a", "", false},
		{"literal not at end", "a LOGIN {3} x\r\n", "a", "", false},
		{"line too long", "a LOGIN " + strings.Repeat("x", 300) + "\r\n", "", "TOOBIG", true},
		{"capability args", "a CAPABILITY now\r\n", "a", "", false},
		{"bad ir", "a AUTHENTICATE PLAIN !!\r\n", "a", "", false},
		{"id unbalanced", "a ID (\"name\" \"x\"\r\n", "a", "", false},
		{"id odd", "a ID (\"name\")\r\n", "a", "", false},
		{"nul in quoted", "a LOGIN \"a\x00b\" pw\r\n", "a", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conts := 0
			_, err := read(t, tt.in, &conts)
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want *ParseError", err)
			}
			if pe.Tag != tt.tag || pe.Code != tt.code || pe.Fatal != tt.fatal {
				t.Fatalf("got tag %q code %q fatal %v, want %q %q %v", pe.Tag, pe.Code, pe.Fatal, tt.tag, tt.code, tt.fatal)
			}
			if conts != 0 {
				t.Fatalf("sent %d continuations for a refused command", conts)
			}
		})
	}
}

func TestReadCommandTruncatedLiteral(t *testing.T) {
	conts := 0
	_, err := read(t, "a LOGIN {10}\r\nabc", &conts)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", `"alice"`},
		{`p"a\ss`, `"p\"a\\ss"`},
		{"pässwd", "{7+}\r\npässwd"},
		{"a\r\nb", "{4+}\r\na\r\nb"},
	}
	for _, tt := range tests {
		if got := string(AppendString(nil, tt.in)); got != tt.want {
			t.Errorf("AppendString(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzReadCommand checks that no input panics, that refusals are
// well-formed, and that LOGIN arguments survive a round trip through
// AppendString.
func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{
		"a1 LOGIN alice@example.org secret\r\n",
		"a LOGIN {5}\r\nalice {4+}\r\nx yz\r\n",
		"a LOGIN \"al\\\"ice\" \"p w\"\r\n",
		"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n",
		"a ID (\"name\" \"x\" \"version\" NIL)\r\n",
		"a STARTTLS\r\n",
		"* LOGIN x y\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r := &Reader{R: bufio.NewReaderSize(strings.NewReader(in), 256), MaxLiteral: 64}
		cmd, err := r.ReadCommand()
		var pe *ParseError
		if errors.As(err, &pe) {
			if strings.ContainsAny(pe.Tag, " \r\n") {
				t.Fatalf("tag %q would break the response line", pe.Tag)
			}
			return
		}
		if err != nil {
			return
		}
		if cmd.Tag == "" || strings.ContainsAny(cmd.Tag, " \r\n+") {
			t.Fatalf("bad tag %q", cmd.Tag)
		}
		if cmd.Name != "LOGIN" {
			return
		}
		line := "t LOGIN " + string(AppendString(nil, cmd.Args[0])) + " " + string(AppendString(nil, cmd.Args[1])) + "\r\n"
		r2 := &Reader{R: bufio.NewReaderSize(strings.NewReader(line), 1024), MaxLiteral: 1024}
		cmd2, err := r2.ReadCommand()
		if err != nil {
			t.Fatalf("re-reading %q: %v", line, err)
		}
		if !reflect.DeepEqual(cmd.Args, cmd2.Args) {
			t.Fatalf("round trip: %q != %q", cmd.Args, cmd2.Args)
		}
	})
}

func BenchmarkReadCommandLogin(b *testing.B) {
	in := "a1 LOGIN alice@example.org \"correct horse\"\r\n"
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 4096)
	r := &Reader{R: br}
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(in)
		br.Reset(sr)
		if _, err := r.ReadCommand(); err != nil {
			b.Fatal(err)
		}
	}
}
