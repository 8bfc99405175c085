package loadgen

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcTree returns roots and all their live descendants, from /proc.
func ProcTree(roots ...int) []int {
	children := make(map[int][]int)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ParentPID(pid); ok {
			children[pp] = append(children[pp], pid)
		}
	}
	var out []int
	seen := make(map[int]bool)
	stack := append([]int(nil), roots...)
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[p] || p <= 0 {
			continue
		}
		seen[p] = true
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(p))); err != nil {
			continue
		}
		out = append(out, p)
		stack = append(stack, children[p]...)
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, is index 0).
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// ParentPID returns pid's parent, from /proc/PID/stat.
func ParentPID(pid int) (int, bool) {
	f := statFields(pid)
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// CPUTime returns the CPU time (user+system) used by pids, including the
// reaped children they have waited for, so that processes which exit
// between two samples (a forking proxy's per-session children) are still
// charged.
func CPUTime(pids []int) time.Duration {
	user, sys := CPUTimes(pids)
	return user + sys
}

// CPUTimes is CPUTime split into user time (utime+cutime) and system time
// (stime+cstime): the latter is the kernel working on the processes'
// behalf, here mostly the TCP stack.
func CPUTimes(pids []int) (user, sys time.Duration) {
	var ticks [2]int64
	for _, p := range pids {
		f := statFields(p)
		// utime, stime, cutime, cstime are fields 14–17: index 11–14.
		if len(f) < 15 {
			continue
		}
		for i, s := range f[11:15] {
			n, _ := strconv.ParseInt(s, 10, 64)
			ticks[i%2] += n
		}
	}
	return time.Duration(ticks[0]) * time.Second / clockTicks, time.Duration(ticks[1]) * time.Second / clockTicks
}

// Mem is the memory of a set of processes in KiB.
type Mem struct {
	RSS   int64 `json:"rss_kib"` // sum of VmRSS: shared pages counted once per process
	PSS   int64 `json:"pss_kib"` // sum of Pss: shared pages split between sharers
	Procs int   `json:"procs"`
}

// Memory sums VmRSS (/proc/PID/status) and Pss (/proc/PID/smaps_rollup)
// over pids.
func Memory(pids []int) Mem {
	var m Mem
	for _, p := range pids {
		rss, ok := kibField("/proc/"+strconv.Itoa(p)+"/status", "VmRSS:")
		if !ok {
			continue
		}
		pss, _ := kibField("/proc/"+strconv.Itoa(p)+"/smaps_rollup", "Pss:")
		m.RSS += rss
		m.PSS += pss
		m.Procs++
	}
	return m
}

func kibField(path, key string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, key) {
			continue
		}
		fs := strings.Fields(l[len(key):])
		if len(fs) == 0 {
			return 0, false
		}
		n, err := strconv.ParseInt(fs[0], 10, 64)
		return n, err == nil
	}
	return 0, false
}

// MachineBusy returns the CPU time all cores have spent busy since boot
// (user, nice, system, irq, softirq and steal in /proc/stat).
func MachineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks
}
