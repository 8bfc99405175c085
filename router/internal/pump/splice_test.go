package pump

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"switchboard/internal/testbed"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// testDirection returns a direction from src to dst outside any session.
func testDirection(dst, src *net.TCPConn) *direction {
	return newDirection(&Splice{opts: &Options{}}, dst, writerFor(dst), src, src, dst)
}

// writerFor returns what AttachIO would write to c with.
func writerFor(c *net.TCPConn) io.Writer {
	if r := NewRawIO(c); r != nil {
		return r
	}
	return c
}

// pumpAll runs a direction's pump until the source's EOF, as runDirection
// does, without the session around it.
func pumpAll(dst, src *net.TCPConn) (int64, error) {
	return pumpDirection(testDirection(dst, src))
}

func pumpDirection(d *direction) (int64, error) {
	var total int64
	for {
		n, err := d.pump()
		total += n
		switch {
		case err == io.EOF:
			return total, nil
		case err == errQuiet:
			d.lastBurst = time.Now() // no parker here: wait again
		case err != nil:
			return total, err
		}
	}
}

// TestPump checks that a plain direction forwards every byte in order, in
// bursts of all sizes (copied and spliced), and ends at the source's EOF:
// back to back, with pauses (each burst found by a new wait, and the EOF
// passed on at once, not at the end of a quiet stretch), and to a
// destination whose reader is slow (writes that wait).
func TestPump(t *testing.T) {
	for _, tc := range []struct {
		name        string
		pauseEvery  int           // the writer pauses after every so many chunks
		readerDelay time.Duration // the reader sleeps before each read
	}{
		{name: "back-to-back"},
		{name: "pauses", pauseEvery: 3},
		{name: "slow-reader", pauseEvery: 7, readerDelay: time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inW, inR := tcpPair(t)   // writer -> spliced source
			outW, outR := tcpPair(t) // spliced destination -> reader
			defer inR.Close()
			defer outW.Close()
			if tc.readerDelay > 0 {
				// A send buffer of one loopback segment fills at once.
				// (Smaller ones stall loopback's 64 KiB segments on the
				// zero-window probe's backoff, for seconds.)
				outW.SetWriteBuffer(64 << 10)
			}
			var want bytes.Buffer
			wrotec := make(chan struct{})
			donec := make(chan error, 1)
			var closed, ended time.Time
			go func() {
				_, err := pumpAll(outW, inR)
				ended = time.Now()
				outW.CloseWrite()
				donec <- err
			}()
			go func() {
				for i := 0; i < 200; i++ {
					size := 1 + i*977
					if i%2 == 1 {
						size = 1 + i%50 // a command line
					}
					chunk := bytes.Repeat([]byte{byte(i)}, size)
					want.Write(chunk)
					inW.Write(chunk)
					if tc.pauseEvery > 0 && i%tc.pauseEvery == 0 {
						time.Sleep(2 * time.Millisecond)
					}
				}
				closed = time.Now()
				inW.CloseWrite()
				close(wrotec)
			}()
			var r io.Reader = outR
			if tc.readerDelay > 0 {
				r = &slowReader{r: outR, delay: tc.readerDelay, n: 64}
			}
			checkForwarded(t, r, donec, wrotec, &want)
			if took := ended.Sub(closed); took >= activeWait/2 {
				t.Errorf("the pump ended %v after the source's EOF", took)
			}
		})
	}
}

// slowReader sleeps before each of its first n reads.
type slowReader struct {
	r     io.Reader
	delay time.Duration
	n     int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.n > 0 {
		s.n--
		time.Sleep(s.delay)
	}
	return s.r.Read(p)
}

// TestPumpTLS checks that a direction with a TLS source forwards every
// byte in order: bursts shorter than its first read, bursts that fill it
// exactly, and larger ones drained through the pooled buffer, some spanning
// several TLS records; it ends at the source's close_notify.
func TestPumpTLS(t *testing.T) {
	ca, err := testbed.NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Issue("pump.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	inW, inR := tcpPair(t)
	outW, outR := tcpPair(t)
	defer inR.Close()
	defer outW.Close()
	src := tls.Server(&rawTCPConn{TCPConn: inR, io: NewRawIO(inR)}, &tls.Config{Certificates: []tls.Certificate{cert}})
	cli := tls.Client(inW, ca.ClientConfig("pump.test"))
	hs := make(chan error, 1)
	go func() { hs <- cli.Handshake() }()
	if err := src.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-hs; err != nil {
		t.Fatal(err)
	}

	d := newDirection(&Splice{opts: &Options{}}, outW, writerFor(outW), src, inR, outW)
	donec := make(chan error, 1)
	go func() {
		_, err := pumpDirection(d)
		outW.CloseWrite()
		donec <- err
	}()
	var want bytes.Buffer
	wrotec := make(chan struct{})
	sizes := []int{1, tlsFirstRead - 1, tlsFirstRead, tlsFirstRead + 1, 2 * tlsFirstRead, 16<<10 - 1, 16 << 10, 16<<10 + 1, copyBufSize, copyBufSize + 1, 200 << 10}
	go func() {
		for i := 0; i < 3*len(sizes); i++ {
			chunk := bytes.Repeat([]byte{byte(i)}, sizes[i%len(sizes)])
			want.Write(chunk)
			cli.Write(chunk)
			if i%4 == 0 {
				time.Sleep(5 * time.Millisecond) // a pause: the next burst starts a fresh read
			}
		}
		cli.Close()
		close(wrotec)
	}()
	checkForwarded(t, outR, donec, wrotec, &want)
}

// checkForwarded reads what the direction wrote until its EOF and checks
// it against what the writer sent, once both are done.
func checkForwarded(t *testing.T, outR io.Reader, donec <-chan error, wrotec <-chan struct{}, want *bytes.Buffer) {
	t.Helper()
	got, err := io.ReadAll(outR)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-donec; err != nil {
		t.Fatalf("pump: %v", err)
	}
	<-wrotec
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("forwarded %d bytes, want %d (or content differs)", len(got), want.Len())
	}
}

// BenchmarkPump moves 1 MiB per op through a plain direction.
func BenchmarkPump(b *testing.B) {
	benchmarkCopy(b, pumpAll)
}

// BenchmarkIOCopy is the same through io.Copy, which Go also splices.
func BenchmarkIOCopy(b *testing.B) {
	benchmarkCopy(b, func(dst, src *net.TCPConn) (int64, error) { return io.Copy(dst, src) })
}

func benchmarkCopy(b *testing.B, copyFn func(dst, src *net.TCPConn) (int64, error)) {
	inW, inR := tcpPair(b)
	outW, outR := tcpPair(b)
	defer inR.Close()
	defer outW.Close()
	defer outR.Close()
	go copyFn(outW, inR)
	const size = 1 << 20
	buf := make([]byte, 64<<10)
	readc := make(chan struct{})
	go func() {
		sink := make([]byte, 64<<10)
		for range readc {
			for n := 0; n < size; {
				m, err := outR.Read(sink)
				if err != nil {
					return
				}
				n += m
			}
			readc <- struct{}{}
		}
	}()
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		readc <- struct{}{}
		for n := 0; n < size; n += len(buf) {
			inW.Write(buf)
		}
		<-readc
	}
	b.StopTimer()
	close(readc)
	inW.Close()
}
