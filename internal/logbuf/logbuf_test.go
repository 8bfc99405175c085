package logbuf

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/slogtest"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the flush timer's goroutine.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func TestWriterHoldsUntilFlush(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, time.Hour, 1<<10)
	w.Write([]byte("one\n"))
	w.Write([]byte("two\n"))
	if got := out.String(); got != "" {
		t.Fatalf("written before any flush: %q", got)
	}
	w.Flush()
	if got := out.String(); got != "one\ntwo\n" {
		t.Fatalf("after Flush: %q, want both lines in order", got)
	}
	if n := out.Writes(); n != 1 {
		t.Fatalf("%d writes for two lines, want 1", n)
	}
}

func TestWriterFlushesWhenFull(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, time.Hour, 100)
	line := strings.Repeat("x", 39) + "\n"
	w.Write([]byte(line))
	w.Write([]byte(line))
	if out.String() != "" {
		t.Fatal("flushed below the size")
	}
	w.Write([]byte(line))
	if got := out.String(); got != line+line+line {
		t.Fatalf("at 120 of 100 bytes: written %q, want all three lines", got)
	}
}

func TestWriterFlushesAfterInterval(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, 20*time.Millisecond, 1<<10)
	w.Write([]byte("late\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() == "" {
		if time.Now().After(deadline) {
			t.Fatal("not written 5 s after a 20 ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := out.String(); got != "late\n" {
		t.Fatalf("written %q", got)
	}
	// The timer re-arms for the next line.
	w.Write([]byte("later\n"))
	for out.String() == "late\n" {
		if time.Now().After(deadline) {
			t.Fatal("the second line was never written")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWriterWritesThroughWithoutInterval(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, 0, 1<<10)
	w.Write([]byte("now\n"))
	if got := out.String(); got != "now\n" {
		t.Fatalf("written %q, want the line at once", got)
	}
}

// TestHandlerFlushesOnWarn checks that a warning goes out at once, after
// the info lines held before it.
func TestHandlerFlushesOnWarn(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, time.Hour, 1<<16)
	log := slog.New(NewHandler(slog.NewTextHandler(w, nil), w))
	log.Info("session", "n", 1)
	log.Info("session", "n", 2)
	if out.String() != "" {
		t.Fatal("info lines written at once")
	}
	log.Warn("backend down")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "n=1") || !strings.Contains(lines[1], "n=2") || !strings.Contains(lines[2], "backend down") {
		t.Fatalf("after a warning: %q, want both info lines then the warning", lines)
	}
}

// TestHandlerConforms runs slog's handler conformance tests on a Handler
// around a JSON handler.
func TestHandlerConforms(t *testing.T) {
	var out syncBuffer
	w := NewWriter(&out, time.Hour, 1<<16)
	h := NewHandler(slog.NewJSONHandler(w, nil), w)
	results := func() []map[string]any {
		w.Flush()
		var ms []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		return ms
	}
	if err := slogtest.TestHandler(h, results); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkSessionLine is one session line through a text handler to a
// file, batched and written through: the difference is the write(2) per
// line that batching saves.
func BenchmarkSessionLine(b *testing.B) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
	}{{"batched", time.Hour}, {"unbatched", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			w := NewWriter(f, tc.interval, 32<<10)
			log := slog.New(NewHandler(slog.NewTextHandler(w, nil), w))
			b.ReportAllocs()
			for b.Loop() {
				log.Info("session", "cid", "abcdefghijklmnop", "proto", "imap", "client", "192.0.2.7:51234",
					"user", "alice@example.org", "outcome", "ok", "bytes_in", int64(120), "bytes_out", int64(4000))
			}
			w.Flush()
		})
	}
}
