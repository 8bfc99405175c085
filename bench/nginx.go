package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"switchboard/bench/loadgen"
	"switchboard/internal/testbed"
	"switchboard/ldapmap"
	"switchboard/route"
)

// nginx's mail proxy (Debian: nginx with libnginx-mod-mail) reads the
// login itself, asks an HTTP service which backend to use (auth_http),
// then logs in to the backend with the client's credentials and relays
// bytes. The auth_http service is the operator's to write; the benchmark
// gives nginx a good one: a small Go server (sbbench in the auth mode,
// its own process, charged to the nginx target) that looks the user up
// with Switchboard's own LDAP map and cache, with the same filter and
// TTLs as Switchboard's defaults. So nginx and Switchboard get the same
// lookup, and the comparison is of the proxies.

var (
	nginxBin        = "/usr/sbin/nginx"
	nginxMailModule = "/usr/lib/nginx/modules/ngx_mail_module.so"
)

// nginxWorkers is worker_processes: one per core, as nginx recommends
// (worker_processes auto).
const nginxWorkers = 2

// nginxAuthEnv holds the auth child's configuration as JSON.
const nginxAuthEnv = "SBBENCH_NGINX_AUTH"

type nginxAuthConfig struct {
	Listen     string `json:"listen"`
	LDAPAddr   string `json:"ldap_addr"`
	BaseDN     string `json:"base_dn"`
	BindDN     string `json:"bind_dn"`
	BindPWFile string `json:"bind_pw_file"`
	Filter     string `json:"filter"`
	IMAPPort   int    `json:"imap_port"`
	POP3Port   int    `json:"pop3_port"`
}

// maybeNginxAuthChild serves nginx's auth_http requests and never returns
// if the process was started as the auth service. Call it first in main.
func maybeNginxAuthChild() {
	spec := os.Getenv(nginxAuthEnv)
	if spec == "" {
		return
	}
	log.SetFlags(0)
	log.SetPrefix("nginx-auth: ")
	var c nginxAuthConfig
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		log.Fatal(err)
	}
	pw, err := os.ReadFile(c.BindPWFile)
	if err != nil {
		log.Fatal(err)
	}
	l, err := ldapmap.NewLDAP(&ldapmap.Options{
		URIs: []string{"ldap://" + c.LDAPAddr}, BindDN: c.BindDN,
		BindPassword: ldapmap.Secret(strings.TrimSpace(string(pw))),
		BaseDN:       c.BaseDN, Filter: c.Filter, Attribute: "host", Scope: ldapmap.ScopeOneLevel,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Switchboard's default cache settings (config: cache_ttl, negative_ttl).
	m := ldapmap.NewCache(l, &ldapmap.CacheOptions{TTL: 5 * time.Minute, NegativeTTL: 30 * time.Second})
	ports := map[string]string{"imap": strconv.Itoa(c.IMAPPort), "pop3": strconv.Itoa(c.POP3Port)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nginxAuth(w, r, m, ports)
	})
	log.Fatal(http.ListenAndServe(c.Listen, h))
}

// nginxAuth answers one auth_http request (nginx's protocol: the login in
// Auth-User, the protocol in Auth-Protocol; the answer in Auth-Status,
// Auth-Server and Auth-Port). The password is not checked here: the
// backend checks it when nginx logs in with it.
func nginxAuth(w http.ResponseWriter, r *http.Request, m route.Mapper, ports map[string]string) {
	port, ok := ports[r.Header.Get("Auth-Protocol")]
	if !ok {
		w.Header().Set("Auth-Status", "Unsupported protocol")
		return
	}
	res, err := m.Lookup(r.Context(), r.Header.Get("Auth-User"))
	switch {
	case err == nil && len(res.Hosts) > 0:
		w.Header().Set("Auth-Status", "OK")
		w.Header().Set("Auth-Server", res.Hosts[0])
		w.Header().Set("Auth-Port", port)
	case errors.Is(err, route.ErrUnknownUser):
		w.Header().Set("Auth-Status", "Invalid login or password")
		w.Header().Set("Auth-Wait", "2")
	default:
		w.Header().Set("Auth-Status", "Temporary server problem, try again later")
		w.Header().Set("Auth-Error-Code", "451 4.3.0")
		w.Header().Set("Auth-Wait", "2")
	}
}

// startNginx runs nginx in the foreground with its mail module, four
// servers (plaintext with STARTTLS and implicit TLS, per protocol), and
// the auth service.
func startNginx(c proxyConfig) (*target, error) {
	if _, err := os.Stat(nginxBin); err != nil {
		return nil, fmt.Errorf("%w: nginx is missing (apt-get install nginx libnginx-mod-mail)", errSkip)
	}
	if _, err := os.Stat(nginxMailModule); err != nil {
		return nil, fmt.Errorf("%w: nginx's mail module is missing (apt-get install libnginx-mod-mail)", errSkip)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(c.Dir, "tmp"), 0o755); err != nil {
		return nil, err
	}
	ports := make([]int, 5)
	for i := range ports {
		if ports[i], err = testbed.FreePort(c.IP); err != nil {
			return nil, err
		}
	}
	addr := func(i int) string { return net.JoinHostPort(c.IP, strconv.Itoa(ports[i])) }
	pwFile := filepath.Join(c.Dir, "ldap-bind-password")
	if err := os.WriteFile(pwFile, []byte(c.BindPW+"\n"), 0o600); err != nil {
		return nil, err
	}
	ac, err := json.Marshal(nginxAuthConfig{
		Listen: addr(4), LDAPAddr: c.LDAPAddr, BaseDN: c.BaseDN, BindDN: c.BindDN, BindPWFile: pwFile,
		Filter: c.Filter, IMAPPort: c.IMAPPort, POP3Port: c.POP3Port,
	})
	if err != nil {
		return nil, err
	}
	auth, err := startDaemon("nginx-auth", filepath.Join(c.Dir, "auth.log"), []string{self}, nginxAuthEnv+"="+string(ac))
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(c.Dir, "nginx.conf")
	vars := map[string]any{
		"Module": nginxMailModule, "Dir": c.Dir, "Workers": nginxWorkers,
		"IMAP": addr(0), "IMAPS": addr(1), "POP3": addr(2), "POP3S": addr(3), "Auth": addr(4),
		"Cert": c.CertFile, "Key": c.KeyFile,
	}
	if err := renderFile(conf, nginxConf, vars, 0o644); err != nil {
		auth.stop()
		return nil, err
	}
	if out, err := exec.Command(nginxBin, "-t", "-p", c.Dir, "-c", conf).CombinedOutput(); err != nil {
		auth.stop()
		return nil, fmt.Errorf("%w: nginx -t: %v: %s", errSkip, err, oneLine(string(out), 300))
	}
	d, err := startDaemon("nginx", filepath.Join(c.Dir, "nginx.out"), []string{nginxBin, "-p", c.Dir, "-c", conf})
	if err != nil {
		auth.stop()
		return nil, err
	}
	t := &target{multiProcess: true, daemons: []*daemon{d, auth},
		lg: &loadgen.Target{Name: "nginx", CAPEM: c.CAPEM, Addrs: map[string]string{
			"imap/none": addr(0), "imap/implicit": addr(1), "pop3/none": addr(2), "pop3/implicit": addr(3),
		}}}
	for _, w := range []struct{ addr, greeting string }{{addr(0), "* OK"}, {addr(2), "+OK"}} {
		if err := d.waitGreeting(w.addr, w.greeting, false); err != nil {
			t.stop()
			return nil, fmt.Errorf("%w: %s", errSkip, oneLine(err.Error()+" "+tail(filepath.Join(c.Dir, "error.log")), 400))
		}
	}
	if err := waitHTTP(addr(4)); err != nil {
		t.stop()
		return nil, fmt.Errorf("%w: auth service: %v: %s", errSkip, err, oneLine(tail(filepath.Join(c.Dir, "auth.log")), 300))
	}
	return t, nil
}

func waitHTTP(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, probeTimeout)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(readyPoll):
		}
	}
}

// nginxConf follows nginx's mail proxy documentation for production:
// worker per core, epoll, the auth service over HTTP, STARTTLS offered on
// the plaintext servers, and the backends' error messages passed on.
// Plaintext logins are allowed (the benchmark's plaintext figures need
// them, as Switchboard's trusted_networks allows them there).
var nginxConf = template.Must(template.New("nginx.conf").Parse(`# Generated by switchboard/bench: nginx as an IMAP/POP3 proxy.
load_module {{.Module}};
daemon off;
master_process on;
worker_processes {{.Workers}};
worker_rlimit_nofile 19500;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;

events {
	worker_connections 19000;
	use epoll;
}

mail {
	server_name bench.example.org;
	auth_http {{.Auth}}/auth;
	proxy_pass_error_message on;

	ssl_certificate {{.Cert}};
	ssl_certificate_key {{.Key}};
	ssl_protocols TLSv1.2 TLSv1.3;

	imap_capabilities "IMAP4rev1" "LITERAL+" "SASL-IR" "ID" "ENABLE" "IDLE";
	imap_auth plain login;
	pop3_capabilities "TOP" "UIDL" "RESP-CODES" "PIPELINING";
	pop3_auth plain;

	server {
		listen {{.IMAP}};
		protocol imap;
		starttls on;
	}
	server {
		listen {{.IMAPS}} ssl;
		protocol imap;
	}
	server {
		listen {{.POP3}};
		protocol pop3;
		starttls on;
	}
	server {
		listen {{.POP3S}} ssl;
		protocol pop3;
	}
}
`))
