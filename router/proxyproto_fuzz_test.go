package router

import (
	"bufio"
	"bytes"
	"io"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// PROXY protocol header sizes (haproxy's proxy-protocol.txt): version 1 is
// one line of at most 107 bytes; version 2 is a 16-byte fixed part and a
// 16-bit length of what follows.
const (
	maxProxyV1Bytes = 107
	maxProxyV2Bytes = 16 + 0xffff
)

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// FuzzProxyHeader feeds any bytes through the PROXY protocol read the
// router does (readProxyHeader: proxyproto.Read on the session's reader
// of bufSize bytes). It must not panic, must not consume more than the
// largest header, nor read from the connection more than that plus one
// buffer; a version 1 header it accepts is at most 107 bytes.
func FuzzProxyHeader(f *testing.F) {
	v2 := []byte("\r\n\r\n\x00\r\nQUIT\n")
	for _, s := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324 993\r\n* OK\r\n"),
		[]byte("PROXY TCP6 2001:db8::1 2001:db8::2 56324 993\r\n"),
		[]byte("PROXY UNKNOWN\r\n"),
		[]byte("PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n"),
		[]byte("PROXY TCP4 999.0.2.1 198.51.100.1 1 2\n"),
		append(append([]byte{}, v2...), 0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 1, 0xdc, 0x04, 0x03, 0xe1),
		append(append([]byte{}, v2...), 0x20, 0x00, 0, 0),
		append(append([]byte{}, v2...), 0x21, 0x21, 0, 36),
		append(append([]byte{}, v2...), 0x21, 0x11, 0xff, 0xff, 1, 2, 3),
		append(append([]byte{}, v2...), 0x21, 0x11, 0, 15, 192, 0, 2, 1, 198, 51, 100, 1, 0, 1, 0, 2, 0x04, 0, 0),
		[]byte("a1 LOGIN alice secret\r\n"),
		[]byte("PROXY " + string(bytes.Repeat([]byte("x"), 200)) + "\r\n"),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		cr := &countingReader{r: bytes.NewReader(in)}
		br := bufio.NewReaderSize(cr, bufSize)
		h, err := proxyproto.Read(br)
		consumed := cr.n - br.Buffered()
		if consumed > maxProxyV2Bytes {
			t.Fatalf("consumed %d bytes, more than the largest header (%d)", consumed, maxProxyV2Bytes)
		}
		if cr.n > maxProxyV2Bytes+bufSize {
			t.Fatalf("read %d bytes from the connection for one header", cr.n)
		}
		if err != nil {
			if h != nil {
				t.Fatalf("header %v returned with error %v", h, err)
			}
			return
		}
		if h.Version == 1 && consumed > maxProxyV1Bytes {
			t.Fatalf("accepted a version 1 header of %d bytes", consumed)
		}
	})
}
