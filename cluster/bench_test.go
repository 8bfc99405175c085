package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// firedHandler signals every Invalidate call on a shared channel.
type firedHandler struct{ fired chan<- struct{} }

func (h firedHandler) Invalidate(string) { h.fired <- struct{}{} }
func (h firedHandler) Kick(string)       {}
func (h firedHandler) Hold(string, bool) {}

// measureConvergence runs Invalidate on nodes[0] b.N times and waits each
// time until every node's handler has fired.
func measureConvergence(b *testing.B, nodes []*Cluster, fired <-chan struct{}) {
	b.Helper()
	var total time.Duration
	i, late := 0, 0
	for b.Loop() {
		start := time.Now()
		if err := nodes[0].Invalidate("user"+strconv.Itoa(i), false); errors.Is(err, ErrNotDelivered) {
			late++ // some direct sends took over 1 s; gossip still counts
		} else if err != nil {
			b.Fatal(err)
		}
		for range nodes {
			select {
			case <-fired:
			case <-time.After(30 * time.Second):
				b.Fatalf("invalidation %d did not reach every node", i)
			}
		}
		total += time.Since(start)
		i++
	}
	b.ReportMetric(float64(total.Microseconds())/1000/float64(i), "ms-to-all")
	b.ReportMetric(float64(late)/float64(i), "late-direct/op")
}

// BenchmarkInvalidateConvergence3 measures the time from Invalidate on one
// of three real nodes (loopback UDP/TCP, encrypted) until all three
// handlers have fired.
func BenchmarkInvalidateConvergence3(b *testing.B) {
	for _, mode := range []string{"direct", "gossip-only"} {
		b.Run(mode, func(b *testing.B) {
			fired := make(chan struct{}, 64)
			keys := []Key{newKey(b)}
			var nodes []*Cluster
			var first string
			for i := range 3 {
				ip := loopbackIP()
				opts := &Options{
					NodeName:   fmt.Sprintf("n%d", i+1),
					BindAddr:   ip,
					Keys:       keys,
					Handler:    firedHandler{fired},
					Logger:     testLogger(b),
					gossipOnly: mode == "gossip-only",
					tweak:      func(mc *memberlist.Config) { mc.BindPort = 0 },
				}
				if i > 0 {
					opts.Peers = []string{first}
				}
				c, err := New(opts)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { c.Shutdown() })
				if i == 0 {
					first = net.JoinHostPort(ip, strconv.Itoa(int(c.ml.LocalNode().Port)))
				}
				nodes = append(nodes, c)
			}
			waitClusterSize(b, nodes, 3)
			measureConvergence(b, nodes, fired)
		})
	}
}

// BenchmarkInvalidateConvergenceMock measures the same with 50 and 200
// simulated nodes on memberlist's in-process MockNetwork, with the
// default timings.
func BenchmarkInvalidateConvergenceMock(b *testing.B) {
	for _, n := range []int{50, 200} {
		for _, mode := range []string{"direct", "gossip-only"} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, mode), func(b *testing.B) {
				benchMock(b, n, mode == "gossip-only")
			})
		}
	}
}

func benchMock(b *testing.B, n int, gossipOnly bool) {
	fired := make(chan struct{}, 4*n)
	keys := []Key{newKey(b)}
	// MockNetwork's maps are not locked: create every transport before
	// any node runs.
	mnet := &memberlist.MockNetwork{}
	transports := make([]*queuedTransport, n)
	for i := range n {
		transports[i] = newQueuedTransport(mnet.NewTransport(fmt.Sprintf("m%03d", i)))
	}
	addr := func(i int) string {
		ip, port, err := transports[i].FinalAdvertiseAddr("", 0)
		if err != nil {
			b.Fatal(err)
		}
		return net.JoinHostPort(ip.String(), strconv.Itoa(port))
	}
	nodes := make([]*Cluster, n)
	for i := range n {
		opts := &Options{
			NodeName:   fmt.Sprintf("m%03d", i),
			Keys:       keys,
			Handler:    firedHandler{fired},
			Logger:     testLogger(b),
			gossipOnly: gossipOnly,
			tweak: func(mc *memberlist.Config) {
				mc.Transport = transports[i]
				// 200 simulated nodes share this process's CPU, and
				// memberlist's LZW compression of every gossip packet
				// dominates it (a fresh compressor per packet). Real nodes
				// each have their own CPU; here it would starve the probes
				// into false suspicions.
				mc.EnableCompression = false
			},
		}
		if i > 0 {
			// A few seeds each, as a real peers list would spread the
			// joins instead of all hitting one node.
			opts.Peers = []string{addr(0), addr(i / 2), addr(i - 1)}
		}
		c, err := New(opts)
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = c
	}
	b.Cleanup(func() { shutdownMock(nodes, transports) })
	start := time.Now()
	waitClusterSize(b, nodes, n)
	b.Logf("%d nodes converged in %v", n, time.Since(start))
	measureConvergence(b, nodes, fired)
}

func waitClusterSize(b testing.TB, nodes []*Cluster, n int) {
	b.Helper()
	eventually(b, 120*time.Second, func() bool {
		for _, c := range nodes {
			if int(c.numAlive.Load()) != n {
				return false
			}
		}
		return true
	}, "cluster did not reach %d members", n)
}

// shutdownMock shuts the nodes down while draining their mock transports:
// MockTransport sends block until the receiver reads, and a shut down
// node no longer reads.
func shutdownMock(nodes []*Cluster, transports []*queuedTransport) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range nodes {
		c.Shutdown()
		wg.Add(1)
		go drainMock(transports[i], stop, &wg)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
}

// drainMock is the goroutine discarding traffic to a shut down mock node.
func drainMock(t *queuedTransport, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		select {
		case <-t.PacketCh():
		case conn := <-t.StreamCh():
			conn.Close()
		case <-stop:
			return
		}
	}
}

// queuedTransport makes a MockTransport's packet sends asynchronous.
// MockTransport delivers a packet by a blocking send on the receiver's
// unbuffered channel, so two nodes answering each other's pings from
// their packet loops deadlock once a cluster is busy. Here sends go to a
// bounded queue drained by a goroutine, and a full queue drops the packet,
// as UDP would.
type queuedTransport struct {
	*memberlist.MockTransport
	q     chan queuedPacket
	stopc chan struct{}
	once  sync.Once
}

type queuedPacket struct {
	b []byte
	a memberlist.Address
}

func newQueuedTransport(mt *memberlist.MockTransport) *queuedTransport {
	t := &queuedTransport{MockTransport: mt, q: make(chan queuedPacket, 1024), stopc: make(chan struct{})}
	go t.sendLoop()
	return t
}

func (t *queuedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *queuedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	select {
	case t.q <- queuedPacket{b: bytes.Clone(b), a: a}:
	default: // dropped
	}
	return time.Now(), nil
}

func (t *queuedTransport) Shutdown() error {
	t.once.Do(func() { close(t.stopc) })
	return nil
}

// sendLoop is the goroutine delivering queued packets.
func (t *queuedTransport) sendLoop() {
	for {
		select {
		case p := <-t.q:
			t.MockTransport.WriteToAddress(p.b, p.a)
		case <-t.stopc:
			return
		}
	}
}
