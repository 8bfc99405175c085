package testbed

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"
)

// Timeouts and limits of the harness.
const (
	readyTimeout      = 10 * time.Second      // how long an instance may take to answer
	readyPollInterval = 20 * time.Millisecond // pause between two readiness probes
	probeTimeout      = 1 * time.Second       // deadline for one readiness probe
	stopGrace         = 5 * time.Second       // SIGTERM to SIGKILL
	logTailBytes      = 4096                  // how much of a log an error quotes
	dialTimeout       = 2 * time.Second       // LDAP connections made by the harness
	ldapOpTimeout     = 10 * time.Second      // one LDAP operation made by the harness
)

// AllocIP returns a random loopback address 127.x.y.z with x ≠ 0 and
// z ∉ {0, 255}, so it is never 127.0.0.1. Instances on different addresses
// cannot collide on ports, even across concurrent test processes. Linux
// routes all of 127.0.0.0/8 to the loopback interface.
func AllocIP() string {
	return fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
}

// FreePort returns a TCP port that is free on ip at the time of the call.
func FreePort(ip string) (int, error) {
	ports, err := freePorts(ip, 1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freePorts returns n distinct free TCP ports on ip. All listeners stay open
// until every port is known, so the kernel cannot hand out one twice.
func freePorts(ip string, n int) ([]int, error) {
	ports := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("testbed: find free port on %s: %w", ip, err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// hostPort joins ip and port.
func hostPort(ip string, port int) string {
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// probeGreeting connects to addr from the same IP address and reads one
// line, which must start with prefix (for example "* OK" or "+OK"). Coming
// from the server's own address keeps probes apart from test clients in
// server logs (rip equals lip).
func probeGreeting(addr, prefix string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	dialer := &net.Dialer{Timeout: probeTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}
	conn, err := dialer.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(probeTimeout)); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read greeting from %s: %w", addr, err)
	}
	if !strings.HasPrefix(line, prefix) {
		return fmt.Errorf("greeting from %s is %q, want %q", addr, strings.TrimSpace(line), prefix)
	}
	return nil
}
