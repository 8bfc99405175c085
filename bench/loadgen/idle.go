package loadgen

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"
)

// idleChildEnv marks a process started by Idle to hold sessions.
const idleChildEnv = "SWITCHBOARD_LOADGEN_IDLE_CHILD"

// MaxConnsPerChild bounds the sessions one generator process holds, well
// under the machine's 20000 descriptors per process.
const MaxConnsPerChild = 8000

// IdleSpec is the idle figure: N sessions held in IDLE at once.
type IdleSpec struct {
	Target *Target
	TLS    TLSMode
	N      int
	Users  []User
	// Procs returns the pids the memory is charged to (the proxy's whole
	// process tree); it is called before the sessions open and again once
	// they all idle.
	Procs func() []int
	// MultiProcess selects PSS rather than RSS as the headline figure.
	MultiProcess bool
	// Settle is how long to wait after the last session idles before the
	// memory is sampled. Zero means 2 s.
	Settle time.Duration
	// OpenConcurrency is how many sessions each child opens at once. Zero
	// means 16.
	OpenConcurrency int
}

// idleJob is what the parent hands a child on stdin.
type idleJob struct {
	Target      *Target `json:"target"`
	TLS         TLSMode `json:"tls"`
	Users       []User  `json:"users"`
	Offset      int     `json:"offset"`
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
}

// idleReport is what a child writes on stdout once its sessions idle.
type idleReport struct {
	Ready      int    `json:"ready"`
	Failed     int    `json:"failed"`
	FirstError string `json:"first_error,omitempty"`
}

// Idle opens s.N sessions through s.Target in child processes of at most
// MaxConnsPerChild sessions each, has each LOGIN, SELECT INBOX and IDLE,
// and charges the growth of the target's memory to the sessions.
func Idle(ctx context.Context, s IdleSpec) (Result, error) {
	res := Result{Target: s.Target.Name, Workload: WorkIdle, TLS: string(s.TLS), IdleRequested: s.N}
	settle := s.Settle
	if settle == 0 {
		settle = 2 * time.Second
	}
	conc := s.OpenConcurrency
	if conc == 0 {
		conc = 16
	}
	before := Memory(s.Procs())
	exe, err := os.Executable()
	if err != nil {
		return res, err
	}

	nchild := (s.N + MaxConnsPerChild - 1) / MaxConnsPerChild
	type child struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	var children []child
	defer func() {
		for _, c := range children {
			c.stdin.Close()
		}
		for _, c := range children {
			c.cmd.Wait()
		}
	}()
	t0 := time.Now()
	offset := 0
	for i := 0; i < nchild; i++ {
		n := s.N / nchild
		if i < s.N%nchild {
			n++
		}
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), idleChildEnv+"=1")
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return res, err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return res, err
		}
		if err := cmd.Start(); err != nil {
			return res, fmt.Errorf("start idle child: %w", err)
		}
		children = append(children, child{cmd, stdin, bufio.NewReader(stdout)})
		job := idleJob{Target: s.Target, TLS: s.TLS, Users: s.Users, Offset: offset, N: n, Concurrency: conc}
		offset += n
		if err := json.NewEncoder(stdin).Encode(job); err != nil {
			return res, fmt.Errorf("idle child job: %w", err)
		}
	}
	for _, c := range children {
		line, err := c.out.ReadBytes('\n')
		if err != nil {
			return res, fmt.Errorf("idle child report: %w", err)
		}
		var r idleReport
		if err := json.Unmarshal(line, &r); err != nil {
			return res, fmt.Errorf("idle child report %q: %w", line, err)
		}
		res.IdleSessions += r.Ready
		res.Errors += uint64(r.Failed)
		if res.FirstError == "" {
			res.FirstError = r.FirstError
		}
	}
	res.Seconds = round(time.Since(t0).Seconds(), 3)
	res.GeneratorProcs = nchild
	if res.IdleSessions == 0 {
		return res, fmt.Errorf("loadgen: idle %s %s: no session idles (first error: %s)", s.Target.Name, s.TLS, res.FirstError)
	}
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	after := Memory(s.Procs())
	n := float64(res.IdleSessions)
	res.RSSKiBPerSess = round(float64(after.RSS-before.RSS)/n, 2)
	res.PSSKiBPerSess = round(float64(after.PSS-before.PSS)/n, 2)
	res.Processes = after.Procs
	res.MemKind = "rss"
	res.MemKiBPerSess = res.RSSKiBPerSess
	if s.MultiProcess {
		res.MemKind = "pss"
		res.MemKiBPerSess = res.PSSKiBPerSess
	}
	return res, nil
}

// MaybeIdleChild turns the process into an idle-session holder if it was
// started as one by Idle, and then never returns. Call it first in main.
func MaybeIdleChild() {
	if os.Getenv(idleChildEnv) == "" {
		return
	}
	if err := idleChild(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "idle child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func idleChild(in io.Reader, out io.Writer) error {
	br := bufio.NewReader(in)
	var job idleJob
	line, err := br.ReadBytes('\n')
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, &job); err != nil {
		return err
	}
	if len(job.Users) == 0 {
		return errors.New("no users")
	}
	tc, err := newTLSConfigs(job.Target)
	if err != nil {
		return err
	}
	h := &idleHolder{job: &job, tc: tc, conns: make([]*Conn, job.N)}
	var wg sync.WaitGroup
	for w := 0; w < job.Concurrency; w++ {
		wg.Add(1)
		go h.openLoop(&wg)
	}
	wg.Wait()
	failed := h.failed.Load()
	r := idleReport{Ready: job.N - int(failed), Failed: int(failed)}
	if h.firstErr != nil {
		r.FirstError = h.firstErr.Error()
	}
	if err := json.NewEncoder(out).Encode(r); err != nil {
		return err
	}
	// Hold the sessions until the parent closes our stdin.
	io.Copy(io.Discard, br)
	for _, c := range h.conns {
		if c != nil {
			c.Close()
		}
	}
	return nil
}

// idleHolder opens a child's share of the idle sessions.
type idleHolder struct {
	job      *idleJob
	tc       *tlsConfigs
	conns    []*Conn
	next     atomic.Int64
	failed   atomic.Int64
	errOnce  sync.Once
	firstErr error
}

// openLoop opens sessions until the child's share is taken.
func (h *idleHolder) openLoop(wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		i := int(h.next.Add(1) - 1)
		if i >= h.job.N {
			return
		}
		u := &h.job.Users[(h.job.Offset+i)%len(h.job.Users)]
		c, err := openIdle(h.job.Target, h.tc, u, h.job.TLS)
		if err != nil {
			h.failed.Add(1)
			h.errOnce.Do(func() { h.firstErr = err })
			continue
		}
		h.conns[i] = c
	}
}

func openIdle(t *Target, tc *tlsConfigs, u *User, m TLSMode) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sessionTimeout)
	defer cancel()
	c, err := open(ctx, t, tc, u, IMAP, m)
	if err != nil {
		return nil, err
	}
	if err := c.IMAPIdle(); err != nil {
		c.Close()
		return nil, err
	}
	// IDLE lasts until the parent lets go; no deadline while idling.
	c.SetDeadline(time.Time{})
	return c, nil
}
