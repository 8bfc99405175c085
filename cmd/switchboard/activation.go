package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"switchboard/config"
	"switchboard/router"
)

// The environment of socket activation (sd_listen_fds(3)) and of the
// upgrade hand-over (handover.go), which passes its sockets the same way.
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
	// envHandover holds the pid of the process handing its sockets over;
	// the new process is its child, so its parent pid must match (the
	// new process's pid is not known before it starts).
	envHandover = "SWITCHBOARD_HANDOVER"
	// listenFDsStart is the first passed descriptor (SD_LISTEN_FDS_START).
	listenFDsStart = 3
	// handoverFDName names the control socket among the passed ones.
	handoverFDName = "switchboard-handover"
	// handoverTimeout bounds each step of a hand-over: the new process
	// preparing (configuration, certificates, map), and then starting.
	handoverTimeout = 60 * time.Second
)

// inheritedSocket is a listening socket passed to the process.
type inheritedSocket struct {
	name string // FileDescriptorName=, or the listener's name on a hand-over
	ln   net.Listener
}

// inherited is what the process was given at start: listening sockets
// and, on a hand-over, the control socket to the process handing over.
type inherited struct {
	socks []*inheritedSocket
	ctrl  *os.File // nil unless started by a hand-over
	r     *bufio.Reader
}

// inheritedListeners takes the sockets passed by systemd or by a
// hand-over, and removes the variables that pass them from the
// environment, so that no process started later takes them for its own.
// Without any it returns an empty set.
func inheritedListeners() (*inherited, error) {
	in := &inherited{}
	nfds, pid := os.Getenv(envListenFDs), os.Getenv(envListenPID)
	names := strings.Split(os.Getenv(envListenFDNames), ":")
	from := os.Getenv(envHandover)
	for _, k := range []string{envListenPID, envListenFDs, envListenFDNames, envHandover} {
		os.Unsetenv(k)
	}
	if nfds == "" {
		return in, nil
	}
	mine := pid == strconv.Itoa(os.Getpid()) || (pid == "" && from != "" && from == strconv.Itoa(os.Getppid()))
	if !mine {
		return in, nil // meant for another process
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s=%q: not a count", envListenFDs, nfds)
	}
	for i := 0; i < n; i++ {
		fd := listenFDsStart + i
		syscall.CloseOnExec(fd)
		name := ""
		if i < len(names) {
			name = names[i]
		}
		f := os.NewFile(uintptr(fd), name)
		if name == handoverFDName && from != "" {
			in.ctrl, in.r = f, bufio.NewReader(f)
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			in.closeRest(nil)
			return nil, fmt.Errorf("passed descriptor %d (%q): %w", fd, name, err)
		}
		in.socks = append(in.socks, &inheritedSocket{name: name, ln: ln})
	}
	return in, nil
}

// take returns and removes the passed socket for listener l: the one
// named as l, else the one bound to l's address; nil if there is none.
func (in *inherited) take(l config.Listener) net.Listener {
	for _, match := range []func(s *inheritedSocket) bool{
		func(s *inheritedSocket) bool { return s.name == l.Name },
		func(s *inheritedSocket) bool { return sameAddr(s.ln.Addr(), l.Address) },
	} {
		for i, s := range in.socks {
			if match(s) {
				in.socks = append(in.socks[:i], in.socks[i+1:]...)
				return s.ln
			}
		}
	}
	return nil
}

// sameAddr reports whether a bound socket's address is the configured
// "host:port": the same port, and the same IP or both unspecified
// (systemd's ListenStream=993 binds [::]:993 for 0.0.0.0:993 as well).
func sameAddr(bound net.Addr, configured string) bool {
	ta, ok := bound.(*net.TCPAddr)
	if !ok {
		return false
	}
	host, port, err := net.SplitHostPort(configured)
	if err != nil || port != strconv.Itoa(ta.Port) {
		return false
	}
	ip, err := netip.ParseAddr(host)
	if host == "" {
		ip, err = netip.IPv6Unspecified(), nil
	}
	if err != nil {
		return false
	}
	got, _ := netip.AddrFromSlice(ta.IP)
	ip, got = ip.Unmap(), got.Unmap()
	if ip.IsUnspecified() && got.IsUnspecified() {
		return true
	}
	return ip == got
}

// closeRest closes the passed sockets that no listener took.
func (in *inherited) closeRest(logger *slog.Logger) {
	for _, s := range in.socks {
		if logger != nil {
			logger.Warn("passed socket matches no [[listen]]: closed", "name", s.name, "addr", s.ln.Addr().String())
		}
		s.ln.Close()
	}
	in.socks = nil
}

// listenOn serves listener l on its passed socket, or on one it opens.
// It returns the socket, which a hand-over passes on.
func listenOn(srv *router.Server, in *inherited, l config.Listener, logger *slog.Logger) (net.Listener, error) {
	ln, passed := in.take(l), true
	if ln == nil {
		passed = false
		lc := net.ListenConfig{KeepAlive: -1} // router.Serve sets keepalive on the listener
		var err error
		if ln, err = lc.Listen(context.Background(), "tcp", l.Address); err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
	}
	addr, err := srv.Serve(router.ListenerConfig{
		Name:          l.Name,
		Protocol:      l.Protocol,
		Addr:          l.Address,
		TLS:           tlsMode(l.TLS),
		ProxyProtocol: l.ProxyProtocol,
		ProxyFrom:     l.ProxyNets(),
		Cache:         l.Cache,
	}, ln)
	if err != nil {
		return nil, err
	}
	logger.Info("listening", "listener", l.Name, "proto", l.Protocol, "addr", addr.String(), "tls", l.TLS,
		"proxy_protocol", l.ProxyProtocol, "cache", l.Cache, "passed", passed)
	return ln, nil
}

// handedOver reports whether a hand-over started this process.
func (in *inherited) handedOver() bool { return in.ctrl != nil }

// prepared tells the process handing over that this one has loaded its
// configuration, and waits until that one has left the cluster and
// closed its admin listener, whose ports this one binds next.
func (in *inherited) prepared() error {
	if in.ctrl == nil {
		return nil
	}
	in.ctrl.SetDeadline(time.Now().Add(handoverTimeout))
	if _, err := in.ctrl.WriteString(msgPrepared + "\n"); err != nil {
		return fmt.Errorf("hand-over: %w", err)
	}
	line, err := in.r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("hand-over: waiting for the old process: %w", err)
	}
	if strings.TrimSpace(line) != msgReleased {
		return errors.New("hand-over: unexpected " + strconv.Quote(line))
	}
	return nil
}

// started tells the service manager, or the process handing over, that
// this one serves.
func (in *inherited) started(logger *slog.Logger) {
	if in.ctrl == nil {
		if err := sdNotify("READY=1"); err != nil {
			logger.Warn("sd_notify", "err", err)
		}
		return
	}
	// The old process, still the unit's main process, names this one
	// main (MAINPID=): only the main process may notify.
	if _, err := in.ctrl.WriteString(msgReady + "\n"); err != nil {
		logger.Warn("hand-over: telling the old process", "err", err)
	}
	in.ctrl.Close()
	in.ctrl = nil
}
