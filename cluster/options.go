package cluster

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"switchboard/internal/usertable"
	"time"

	"github.com/hashicorp/memberlist"
)

// Defaults for Options fields left zero, exported so that the
// configuration fills in, documents and checks the values New uses.
// memberlist's DefaultLANConfig values are kept unless a comment says why
// they were tightened.
const (
	DefaultBindAddr = "0.0.0.0"     // every address; set the VPN address
	DefaultBindPort = 7946          // memberlist's customary port, TCP and UDP
	DefaultLabel    = "switchboard" // keeps two clusters on one network apart

	DefaultGossipInterval    = 100 * time.Millisecond         // LAN: 200 ms; halves the epidemic's hop time
	DefaultProbeInterval     = time.Second                    // LAN
	DefaultProbeTimeout      = 500 * time.Millisecond         // LAN; VPN round trips are well below
	DefaultSuspicionMult     = 4                              // LAN
	DefaultPushPullInterval  = 15 * time.Second               // LAN: 30 s; full state (limits, holds) converges faster
	DefaultTCPTimeout        = 5 * time.Second                // LAN: 10 s; bounds Shutdown and stuck direct sends
	DefaultUDPBufferSize     = 1300                           // LAN: 1400; fits WireGuard (MTU 1420) over IPv6 without fragments
	DefaultStateInterval     = 500 * time.Millisecond         // health and count changes gossiped twice a second
	DefaultReconnectInterval = 10 * time.Second               // failed members and missing seeds retried
	DefaultHealthTTL         = 30 * time.Second               // a backend report not renewed for this long is dropped
	DefaultFailureWindow     = usertable.DefaultFailureWindow // time constant of the login failure counts
	DefaultMaxEntries        = usertable.DefaultMaxEntries    // per shared table, per node

	// deliveryTimeout bounds how long Invalidate and Hold wait for their
	// direct sends; the 1 s convergence promise.
	deliveryTimeout = time.Second
	// reconnectTimeout is how long a failed member's address is retried.
	reconnectTimeout = 6 * time.Hour
	// eventLogTTL is how long invalidations and holds are kept for replay to
	// nodes that missed them (sent in push/pull).
	eventLogTTL = 10 * time.Minute
	// kickReplayMaxAge: a replayed invalidation older than this drops the
	// route but no longer closes sessions, which may be newer than the kick.
	kickReplayMaxAge = time.Minute
	// maxQueuedBroadcasts bounds the gossip queue; oldest-sent go first.
	maxQueuedBroadcasts = 4096
	// urgentRetransmitMult multiplies memberlist's RetransmitMult for
	// invalidations and holds. Push gossip where each node relays a message
	// k times leaves about e^-k of the nodes uninformed; with the default
	// k = 4·log10(N+1) that is 1 node in 3000, too many for kicks. Three
	// times as many sends makes a miss negligible and costs little, since
	// these messages are rare.
	urgentRetransmitMult = 3
	// maxHandlerQueue bounds callbacks waiting for the Handler.
	maxHandlerQueue = 65536
	// maxDirectInFlight bounds direct sends in flight; beyond it members
	// are left to gossip (it only fills up when members are unreachable).
	maxDirectInFlight = 1024
	// metaMaxSize is memberlist.MetaMaxSize.
	metaMaxSize = memberlist.MetaMaxSize
)

// Key is a gossip encryption key: 16, 24 or 32 bytes (AES-128/192/256-GCM).
// It prints as "***".
type Key []byte

// String implements fmt.Stringer without revealing the key.
func (Key) String() string { return "***" }

// LogValue implements slog.LogValuer without revealing the key.
func (Key) LogValue() slog.Value { return slog.StringValue("***") }

// Options configure a Cluster. New copies them; zero values select the
// documented defaults.
type Options struct {
	// NodeName identifies this node and must be unique in the cluster. If
	// empty, os.Hostname() is used.
	NodeName string

	// BindAddr and BindPort are where gossip listens, on both TCP and UDP:
	// normally the VPN interface's address. Defaults: "0.0.0.0" and 7946.
	BindAddr string
	BindPort int

	// AdvertiseAddr and AdvertisePort are what other nodes are told to use.
	// Defaults: BindAddr if it is a specific address (otherwise memberlist
	// picks the first private address of the host) and the bound port.
	AdvertiseAddr string
	AdvertisePort int

	// Peers are seed addresses, "ip:port" or "host:port" (the port
	// defaults to BindPort); listing this node too is fine. New joins every
	// reachable one in the background; if none is reachable the node keeps
	// serving alone and retries with backoff. Later, seeds that are not
	// members are retried every ReconnectInterval (so prefer IP addresses:
	// a host name cannot be matched to a member and is re-joined each
	// time). Empty means a cluster of one until others join this node.
	Peers []string

	// Keys is the keyring: every key is accepted for decryption and the
	// first one encrypts. Required unless AllowInsecure is set.
	Keys []Key

	// AllowInsecure permits running without Keys: gossip is then plaintext
	// and anyone who can reach the port can join. Off by default.
	AllowInsecure bool

	// Label is memberlist's cluster label, checked on every packet and
	// stream so two clusters sharing a network never merge. Default
	// "switchboard".
	Label string

	// Meta is small, static information about this node shown to the
	// others in Members (version, listener addresses, ...). Encoded, it
	// must fit in 512 bytes. Default none.
	Meta map[string]string

	// Handler receives invalidations, kicks and hold changes. Default:
	// none (they are only tracked).
	Handler Handler

	// Logger receives this package's and memberlist's logs. Default:
	// discard.
	Logger *slog.Logger

	// GossipInterval is how often gossip is sent to GossipNodes (3) random
	// nodes. Default 100 ms (memberlist LAN: 200 ms).
	GossipInterval time.Duration
	// ProbeInterval and ProbeTimeout drive failure detection. Defaults 1 s
	// and 500 ms (memberlist LAN).
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// SuspicionMult scales how long a suspect node has to refute before it
	// is declared failed (SuspicionMult * log10(N+1) * ProbeInterval, at
	// least 1 probe interval). Default 4 (memberlist LAN).
	SuspicionMult int
	// PushPullInterval is how often a full state exchange with one random
	// node happens. Default 15 s (memberlist LAN: 30 s).
	PushPullInterval time.Duration
	// TCPTimeout bounds each TCP exchange (join, push/pull, direct send).
	// Default 5 s (memberlist LAN: 10 s).
	TCPTimeout time.Duration
	// UDPBufferSize is the largest gossip packet, sent or received; keep it
	// the same on every node and below the VPN's MTU minus 48. Default 1300.
	UDPBufferSize int

	// StateInterval is how often changes of backend health, session
	// counts and login failures are gossiped. Default 500 ms.
	StateInterval time.Duration
	// ReconnectInterval is how often a node retries failed members and,
	// while it is alone, the seeds. Default 10 s.
	ReconnectInterval time.Duration
	// HealthTTL is how long a backend health report stays valid without
	// being renewed; reports are re-sent every HealthTTL/3. Default 30 s.
	HealthTTL time.Duration
	// FailureWindow is the time constant of the login failure counts:
	// see FailureScore. Default 15 min.
	FailureWindow time.Duration
	// MaxEntries caps each per-node table (session counts, IP failures,
	// user failures, holds). Default 100000.
	MaxEntries int

	// tweak, if set, edits the memberlist configuration last (tests and
	// benchmarks use it for ports, mock transports and short timers).
	tweak func(*memberlist.Config)
	// gossipOnly disables direct sends, to measure and test the gossip
	// safety net alone.
	gossipOnly bool
}

func durationOr(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

func intOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

func (o *Options) nodeName() (string, error) {
	if o.NodeName != "" {
		return o.NodeName, nil
	}
	return os.Hostname()
}

func (o *Options) bindAddr() string {
	if o.BindAddr != "" {
		return o.BindAddr
	}
	return DefaultBindAddr
}

func (o *Options) label() string {
	if o.Label != "" {
		return o.Label
	}
	return DefaultLabel
}

func (o *Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (o *Options) stateInterval() time.Duration {
	return durationOr(o.StateInterval, DefaultStateInterval)
}
func (o *Options) reconnectInterval() time.Duration {
	return durationOr(o.ReconnectInterval, DefaultReconnectInterval)
}
func (o *Options) healthTTL() time.Duration { return durationOr(o.HealthTTL, DefaultHealthTTL) }
func (o *Options) failureWindow() time.Duration {
	return durationOr(o.FailureWindow, DefaultFailureWindow)
}
func (o *Options) maxEntries() int { return intOr(o.MaxEntries, DefaultMaxEntries) }

// memberlistConfig builds the memberlist configuration; the delegates are
// filled in by New.
func (o *Options) memberlistConfig(name string, logger *slog.Logger) (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr = o.bindAddr()
	mc.BindPort = intOr(o.BindPort, DefaultBindPort)
	mc.AdvertiseAddr = o.AdvertiseAddr
	mc.AdvertisePort = o.AdvertisePort
	if o.AdvertisePort == 0 {
		mc.AdvertisePort = mc.BindPort
	}
	if o.AdvertiseAddr == "" && mc.BindAddr != "0.0.0.0" && mc.BindAddr != "::" {
		mc.AdvertiseAddr = mc.BindAddr
	}
	mc.Label = o.label()
	mc.GossipInterval = durationOr(o.GossipInterval, DefaultGossipInterval)
	mc.ProbeInterval = durationOr(o.ProbeInterval, DefaultProbeInterval)
	mc.ProbeTimeout = durationOr(o.ProbeTimeout, DefaultProbeTimeout)
	mc.SuspicionMult = intOr(o.SuspicionMult, DefaultSuspicionMult)
	mc.PushPullInterval = durationOr(o.PushPullInterval, DefaultPushPullInterval)
	mc.TCPTimeout = durationOr(o.TCPTimeout, DefaultTCPTimeout)
	mc.UDPBufferSize = intOr(o.UDPBufferSize, DefaultUDPBufferSize)
	mc.LogOutput = nil
	mc.Logger = newMemberlistLogger(logger)

	switch {
	case len(o.Keys) > 0:
		keys := make([][]byte, len(o.Keys))
		for i, k := range o.Keys {
			switch len(k) {
			case 16, 24, 32:
			default:
				return nil, fmt.Errorf("cluster: key %d is %d bytes, want 16, 24 or 32", i+1, len(k))
			}
			keys[i] = k
		}
		kr, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	case o.AllowInsecure:
		mc.GossipVerifyIncoming = false
		mc.GossipVerifyOutgoing = false
	default:
		return nil, errors.New("cluster: no gossip key configured (set Keys, or AllowInsecure for plaintext gossip)")
	}
	if o.tweak != nil {
		o.tweak(mc)
	}
	return mc, nil
}

// ReadKeyring parses a keyring file: one base64 key per line (standard
// encoding, 16, 24 or 32 bytes once decoded), the first line being the
// primary key used to encrypt. Blank lines and lines starting with '#' are
// ignored. Errors never include key material.
func ReadKeyring(r io.Reader) ([]Key, error) {
	var keys []Key
	sc := bufio.NewScanner(io.LimitReader(r, 1<<20))
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring line %d: not base64", line)
		}
		switch len(k) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("cluster: keyring line %d: key is %d bytes, want 16, 24 or 32", line, len(k))
		}
		for _, prev := range keys {
			if bytes.Equal(prev, k) {
				return nil, fmt.Errorf("cluster: keyring line %d: duplicate key", line)
			}
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cluster: keyring: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("cluster: keyring: no keys")
	}
	return keys, nil
}

// ReadKeyringFile reads a keyring file; see ReadKeyring.
func ReadKeyringFile(path string) ([]Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	defer f.Close()
	keys, err := ReadKeyring(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}
