package cluster

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// logBridge is the io.Writer behind the *log.Logger that memberlist writes
// to. memberlist formats lines as "[LEVEL] memberlist: message"; the level
// prefix becomes the slog level and the rest the message.
type logBridge struct {
	logger *slog.Logger
}

func newMemberlistLogger(logger *slog.Logger) *log.Logger {
	return log.New(&logBridge{logger: logger.With("component", "memberlist")}, "", 0)
}

var levelPrefixes = []struct {
	prefix string
	level  slog.Level
}{
	{"[ERR]", slog.LevelError},
	{"[ERROR]", slog.LevelError},
	{"[WARN]", slog.LevelWarn},
	{"[INFO]", slog.LevelInfo},
	{"[DEBUG]", slog.LevelDebug},
	{"[TRACE]", slog.LevelDebug - 4},
}

func (b *logBridge) Write(p []byte) (int, error) {
	n := len(p)
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, msg := parseMemberlistLine(line)
		if msg != "" {
			b.logger.Log(context.Background(), level, msg)
		}
	}
	return n, nil
}

// parseMemberlistLine splits "[WARN] memberlist: text" into a level and
// "text". Lines without a known prefix are logged at info level unchanged.
func parseMemberlistLine(line []byte) (slog.Level, string) {
	line = bytes.TrimSpace(line)
	level := slog.LevelInfo
	for _, lp := range levelPrefixes {
		if bytes.HasPrefix(line, []byte(lp.prefix)) {
			level = lp.level
			line = bytes.TrimSpace(line[len(lp.prefix):])
			break
		}
	}
	line = bytes.TrimPrefix(line, []byte("memberlist: "))
	return level, string(line)
}
