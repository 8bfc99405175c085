package wire

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name  string
		in    string
		lines []string
		err   error
	}{
		{"crlf", "a NOOP\r\nb LOGOUT\r\n", []string{"a NOOP", "b LOGOUT"}, io.EOF},
		{"bare lf", "a NOOP\n", []string{"a NOOP"}, io.EOF},
		{"unterminated", "a NOOP", nil, io.EOF},
		{"too long then ok", long + "\r\na NOOP\r\n", nil, ErrLineTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.in), 32)
			var got []string
			var err error
			for {
				var line []byte
				line, err = ReadLine(br)
				if err != nil {
					break
				}
				got = append(got, string(line))
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if strings.Join(got, "|") != strings.Join(tt.lines, "|") {
				t.Fatalf("lines = %q, want %q", got, tt.lines)
			}
		})
	}
}

func TestReadLineRecoversAfterLongLine(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader(strings.Repeat("y", 70)+"\r\nok\r\n"), 16)
	if _, err := ReadLine(br); err != ErrLineTooLong {
		t.Fatalf("first line: err = %v, want ErrLineTooLong", err)
	}
	line, err := ReadLine(br)
	if err != nil || string(line) != "ok" {
		t.Fatalf("second line = %q, %v; want \"ok\"", line, err)
	}
}

func TestFields(t *testing.T) {
	got := Fields(nil, []byte("a LOGIN bob secret word"), 3)
	want := []string{"a", "LOGIN", "bob secret word"}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("field %d = %q, want %q", i, got[i], want[i])
		}
	}
}
