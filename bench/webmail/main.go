// Command webmail is the browser benchmark of the webmail connection
// cache (make bench-webmail): Roundcube from Debian under a private
// Apache on 127.0.0.1, one vhost per mode, driven by headless Chromium
// through chromedriver's W3C WebDriver API through one scenario (log in,
// open five messages in the preview pane, switch folder and back, log
// out), K paired repetitions with the mode order rotating.
//
// Modes: direct (Roundcube → Dovecot), cache (Roundcube → Switchboard's
// cached listener → Dovecot), imapproxy (Roundcube → up-imapproxy →
// Dovecot), each behind a counting relay that counts the IMAP commands
// Roundcube sends and times its logins; and, for an expensive backend
// login, direct-tls (Roundcube → Dovecot's IMAPS) against cache-tls
// (Roundcube → Switchboard → Dovecot over TLS), without relays.
//
// It prints a Markdown report; figures are from this run only.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"switchboard/internal/testbed"
	"switchboard/internal/webmail"
)

// Benchmark defaults.
const (
	defaultReps        = 5
	messagesPerUser    = 8 // INBOX; the scenario opens 5
	archiveMessages    = 3
	seedTimeout        = 10 * time.Second
	browserWidth       = 1280
	browserHeight      = 800
	webmailIP          = "127.0.0.1" // Roundcube's vhosts, relays and chromedriver
	cacheIdleForBench  = "300s"
	logSettleForCounts = 500 * time.Millisecond
)

// mode is one way Roundcube reaches the mailbox.
type mode struct {
	name  string
	relay *relay // nil: no counting relay
	vhost *vhost
	sb    *webmail.Switchboard // the node whose log tells hits from misses
}

func main() {
	reps := flag.Int("k", defaultReps, "paired repetitions of the scenario per mode")
	shot := flag.String("screenshot", "", "save a PNG of the inbox seen through the cache here")
	sbBin := flag.String("switchboard", "bin/switchboard", "the switchboard binary")
	withTLS := flag.Bool("tls", true, "also run the expensive-login variant (TLS to the backend)")
	keep := flag.Bool("keep", false, "keep the run directory")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*reps, *shot, *sbBin, *withTLS, *keep, log); err != nil {
		fmt.Fprintln(os.Stderr, "bench-webmail:", err)
		os.Exit(1)
	}
}

func run(reps int, shot, sbBin string, withTLS, keep bool, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "sb-webmail-bench-")
	if err != nil {
		return err
	}
	os.Chmod(dir, 0o711) // www-data and the mail user walk through it
	if keep {
		log.Info("run directory kept", "dir", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	names := []string{"direct", "cache", "imapproxy"}
	if withTLS {
		names = append(names, "direct-tls", "cache-tls")
	}
	perBackend := reps*len(names) + 1
	log.Info("starting testbed", "users", perBackend)
	tb, err := testbed.Start(testbed.Options{Dir: filepath.Join(dir, "tb"), UsersPerBackend: perBackend, MessagesPerUser: messagesPerUser})
	if err != nil {
		return err
	}
	defer tb.Close()
	mx1 := tb.Backends["mx1"]
	var users []testbed.User
	for _, u := range tb.Users {
		if strings.HasPrefix(u.Mail, "user") && u.Hosts[0] == "mx1" {
			users = append(users, u)
		}
	}
	for _, u := range users {
		if err := seedArchive(mx1.IMAPAddr, u); err != nil {
			return fmt.Errorf("seed %s: %w", u.Mail, err)
		}
	}
	sbBin, err = filepath.Abs(sbBin)
	if err != nil {
		return err
	}
	cacheTable := "idle_timeout = \"" + cacheIdleForBench + "\""
	sb, err := webmail.StartSwitchboard(webmail.SwitchboardOptions{Binary: sbBin, Dir: filepath.Join(dir, "sb"), Testbed: tb, CacheTable: cacheTable})
	if err != nil {
		return err
	}
	defer sb.Stop()
	px, err := webmail.StartImapproxy(webmail.ImapproxyOptions{Dir: filepath.Join(dir, "imapproxy"), Backend: mx1.IMAPAddr})
	if err != nil {
		return err
	}
	defer px.Stop()
	targets := map[string]string{"direct": mx1.IMAPAddr, "cache": sb.WebmailAddr, "imapproxy": px.Addr}
	var modes []*mode
	var vhosts []*vhost
	for _, name := range []string{"direct", "cache", "imapproxy"} {
		r, err := newRelay(webmailIP+":0", targets[name], log)
		if err != nil {
			return err
		}
		defer r.Close()
		m := &mode{name: name, relay: r, vhost: &vhost{Mode: name, IMAPHost: r.Addr()}}
		if name == "cache" {
			m.sb = sb
		}
		modes = append(modes, m)
	}
	if withTLS {
		sbTLS, err := webmail.StartSwitchboard(webmail.SwitchboardOptions{Binary: sbBin, Dir: filepath.Join(dir, "sb-tls"), Testbed: tb, CacheTable: cacheTable, BackendTLS: true})
		if err != nil {
			return err
		}
		defer sbTLS.Stop()
		modes = append(modes,
			&mode{name: "direct-tls", vhost: &vhost{Mode: "direct-tls", IMAPHost: "ssl://" + mx1.IMAPSAddr, CAFile: tb.CA.File}},
			&mode{name: "cache-tls", vhost: &vhost{Mode: "cache-tls", IMAPHost: sbTLS.WebmailAddr}, sb: sbTLS})
	}
	for _, m := range modes {
		port, err := testbed.FreePort(webmailIP)
		if err != nil {
			return err
		}
		m.vhost.Addr = net.JoinHostPort(webmailIP, fmt.Sprint(port))
		vhosts = append(vhosts, m.vhost)
	}
	ap, err := startApache(filepath.Join(dir, "apache"), vhosts)
	if err != nil {
		return err
	}
	defer ap.Stop()
	cd, err := startChromedriver(webmailIP, filepath.Join(dir, "chromedriver.log"), browserWidth, browserHeight)
	if err != nil {
		return err
	}
	defer cd.Close()

	// One warm-up scenario per mode (PHP's opcode cache, Chromium's
	// HTTP cache), on a user of its own, not counted.
	warm := users[len(users)-1]
	for _, m := range modes {
		if _, err := runMode(cd, m, warm, mx1, -1, ""); err != nil {
			return fmt.Errorf("warm-up %s: %w", m.name, err)
		}
	}
	var results []*scenarioResult
	failures := make(map[string][]string)
	next := 0
	for rep := range reps {
		for i := range modes {
			m := modes[(i+rep)%len(modes)]
			u := users[next]
			next++
			s := ""
			if rep == 0 && m.name == "cache" {
				s = shot
			}
			res, err := runMode(cd, m, u, mx1, rep, s)
			if err != nil {
				// Counted and reported, not fatal: one mode's failure
				// says something about that mode.
				log.Error("scenario failed", "rep", rep, "mode", m.name, "user", u.Mail, "err", err)
				failures[m.name] = append(failures[m.name], fmt.Sprintf("rep %d (%s): %v", rep, u.Mail, err))
				continue
			}
			answers := make(map[string]int)
			for _, s := range res.Sessions {
				answers[s.LoginAnswer]++
			}
			log.Info("scenario", "rep", rep, "mode", m.name, "total", res.Total.Round(time.Millisecond),
				"backend_logins", res.BackendLogins, "php", res.PHPRequests, "login_answers", fmt.Sprint(answers))
			results = append(results, res)
		}
	}
	report(os.Stdout, modes, results, failures)
	return nil
}

// runMode runs the scenario once in mode m as user u and gathers its
// counts.
func runMode(cd *chromedriver, m *mode, u testbed.User, mx1 *testbed.Dovecot, rep int, shot string) (*scenarioResult, error) {
	before, err := webmail.BackendLogins(mx1, u.Mail)
	if err != nil {
		return nil, err
	}
	reqBefore := phpRequests(m.vhost.access)
	if m.relay != nil {
		m.relay.Take()
	}
	steps, total, err := runScenario(cd, "http://"+m.vhost.Addr, u.Mail, u.Password, shot)
	if err != nil {
		return nil, err
	}
	time.Sleep(logSettleForCounts)
	after, err := webmail.BackendLogins(mx1, u.Mail)
	if err != nil {
		return nil, err
	}
	res := &scenarioResult{Mode: m.name, Rep: rep, User: u.Mail, Steps: steps, Total: total,
		PHPRequests: phpRequests(m.vhost.access) - reqBefore, BackendLogins: after - before}
	if m.relay != nil {
		res.Sessions = m.relay.Take()
		classify(res, m)
	}
	return res, nil
}

// classify sorts the scenario's LOGIN latencies into hits and misses: in
// cache mode by the session's cache= field in Switchboard's log (joined
// on the relay's upstream address); direct is all misses. up-imapproxy
// answers "OK User logged in" on hits and misses alike, so its
// latencies stay unclassified (its misses are its backend logins).
func classify(res *scenarioResult, m *mode) {
	var states map[string]string
	if m.sb != nil {
		logText, _ := m.sb.Log()
		states = sessionCacheStates(logText)
	}
	for _, s := range res.Sessions {
		if s.LoginLatency == 0 {
			continue
		}
		if m.name == "imapproxy" {
			res.Unclassified = append(res.Unclassified, s.LoginLatency)
			continue
		}
		if m.name == "cache" && states[s.Upstream] == "hit" {
			res.Hits = append(res.Hits, s.LoginLatency)
		} else {
			res.Misses = append(res.Misses, s.LoginLatency)
		}
	}
}

// sessionCacheStates maps client= to cache= in Switchboard's session
// log lines.
func sessionCacheStates(logText string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(logText, "\n") {
		if !strings.Contains(line, "msg=session") {
			continue
		}
		m[field(line, "client")] = field(line, "cache")
	}
	return m
}

// field returns key's value in a slog text line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if j := strings.IndexByte(v, ' '); j >= 0 {
		v = v[:j]
	}
	return v
}

// phpRequests counts the access log's requests that reach PHP (not
// static files).
func phpRequests(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "\"GET ")
		if i < 0 {
			i = strings.Index(line, "\"POST ")
		}
		if i < 0 {
			continue
		}
		path := strings.Fields(line[i+1:])[1]
		if strings.HasPrefix(path, "/?") || strings.HasPrefix(path, "/index.php") || path == "/" {
			n++
		}
	}
	return n
}

// seedArchive creates, subscribes and fills u's second folder over IMAP.
func seedArchive(addr string, u testbed.User) error {
	c, err := net.DialTimeout("tcp", addr, seedTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(seedTimeout))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return err
	}
	cmd := func(tag, line string) error {
		if _, err := fmt.Fprintf(c, "%s %s\r\n", tag, line); err != nil {
			return err
		}
		return expectTagged(br, tag)
	}
	if err := cmd("a", fmt.Sprintf("LOGIN %q %q", u.Mail, u.Password)); err != nil {
		return err
	}
	if err := cmd("b", "CREATE "+secondFolder); err != nil {
		return err
	}
	if err := cmd("c", "SUBSCRIBE "+secondFolder); err != nil {
		return err
	}
	for i := range archiveMessages {
		msg := testbed.Message("archive@example.net", u.Mail, fmt.Sprintf("Archived message %d for %s", i+1, u.Mail), 512)
		if _, err := fmt.Fprintf(c, "d%d APPEND %s {%d+}\r\n%s\r\n", i, secondFolder, len(msg), msg); err != nil {
			return err
		}
		if err := expectTagged(br, fmt.Sprintf("d%d", i)); err != nil {
			return err
		}
	}
	return cmd("z", "LOGOUT")
}

// expectTagged reads until tag's answer and fails unless it is OK.
func expectTagged(br *bufio.Reader, tag string) error {
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, tag+" ") {
			if !strings.HasPrefix(line, tag+" OK") {
				return fmt.Errorf("%s", strings.TrimSpace(line))
			}
			return nil
		}
	}
}
