package pop3

import (
	"bufio"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestReadCommand(t *testing.T) {
	tests := []struct {
		in   string
		want *Command
	}{
		{"CAPA\r\n", &Command{Name: "CAPA"}},
		{"capa\n", &Command{Name: "CAPA"}},
		{"USER alice@example.org\r\n", &Command{Name: "USER", Args: []string{"alice@example.org"}}},
		{"PASS correct horse battery\r\n", &Command{Name: "PASS", Args: []string{"correct horse battery"}}},
		{"AUTH\r\n", &Command{Name: "AUTH"}},
		{"AUTH plain\r\n", &Command{Name: "AUTH", Args: []string{"PLAIN"}}},
		{"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", &Command{Name: "AUTH", Args: []string{"PLAIN", "AGFsaWNlAHNlY3JldA=="}}},
		{"STLS\r\n", &Command{Name: "STLS"}},
		{"QUIT\r\n", &Command{Name: "QUIT"}},
		{"RETR 1\r\n", &Command{Name: "RETR"}},
	}
	for _, tt := range tests {
		got, err := ReadCommand(bufio.NewReaderSize(strings.NewReader(tt.in), 64))
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: got %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestReadCommandErrors(t *testing.T) {
	tests := []struct {
		in    string
		fatal bool
	}{
		{"\r\n", false},
		{" USER x\r\n", false},
		{"USER\r\n", false},
		{"USER a b\r\n", false},
		{"PASS\r\n", false},
		{"PASS \r\n", false},
		{"CAPA now\r\n", false},
		{"AUTH PLAIN a b\r\n", false},
		{"VERYLONGCMD\r\n", false},
		{"US\x00R x\r\n", false},
		{"USER " + strings.Repeat("x", 100) + "\r\n", true},
	}
	for _, tt := range tests {
		_, err := ReadCommand(bufio.NewReaderSize(strings.NewReader(tt.in), 64))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: err = %v, want *ParseError", tt.in, err)
			continue
		}
		if pe.Fatal != tt.fatal {
			t.Errorf("%q: fatal = %v, want %v", tt.in, pe.Fatal, tt.fatal)
		}
	}
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{"USER alice\r\n", "PASS a b c\r\n", "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n", "CAPA\r\n", "STLS\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		cmd, err := ReadCommand(bufio.NewReaderSize(strings.NewReader(in), 64))
		if err != nil {
			return
		}
		if cmd.Name == "" || strings.ContainsAny(cmd.Name, " \r\n") {
			t.Fatalf("bad name %q", cmd.Name)
		}
		for _, a := range cmd.Args {
			if a == "" || strings.ContainsAny(a, "\r\n\x00") {
				t.Fatalf("bad argument %q in %q", a, in)
			}
		}
		if cmd.Name == "USER" && strings.Contains(cmd.Args[0], " ") {
			t.Fatalf("USER argument with a space: %q", cmd.Args[0])
		}
	})
}

func BenchmarkReadCommandPass(b *testing.B) {
	in := "PASS correct horse battery staple\r\n"
	sr := strings.NewReader(in)
	br := bufio.NewReaderSize(sr, 512)
	b.ReportAllocs()
	for b.Loop() {
		sr.Reset(in)
		br.Reset(sr)
		if _, err := ReadCommand(br); err != nil {
			b.Fatal(err)
		}
	}
}
