// Package wire reads bounded protocol lines before login. It never
// allocates more than the limits it is given, whatever the peer sends.
package wire

import (
	"bufio"
	"bytes"
	"errors"
)

// ErrLineTooLong is returned by ReadLine when a line does not fit the
// reader's buffer. The rest of the line has been discarded.
var ErrLineTooLong = errors.New("wire: line too long")

// maxDiscard bounds how much of an over-long line is read and dropped
// before giving up on finding its end.
const maxDiscard = 64 << 10

// ReadLine reads one line ending in LF from br and returns it without the
// CRLF (or bare LF). The slice points into br's buffer and is valid only
// until the next read. A line longer than br's buffer returns
// ErrLineTooLong after the rest of it has been skipped (up to 64 KiB; past
// that the error is returned with the line unfinished, and the caller
// should hang up).
func ReadLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		discarded := len(line)
		for err == bufio.ErrBufferFull && discarded < maxDiscard {
			line, err = br.ReadSlice('\n')
			discarded += len(line)
		}
		if err == nil || err == bufio.ErrBufferFull {
			return nil, ErrLineTooLong
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// Fields splits s on single spaces into at most n fields, like
// strings.SplitN, without allocating when dst has room.
func Fields(dst [][]byte, s []byte, n int) [][]byte {
	for len(dst) < n-1 {
		i := bytes.IndexByte(s, ' ')
		if i < 0 {
			break
		}
		dst = append(dst, s[:i])
		s = s[i+1:]
	}
	return append(dst, s)
}
