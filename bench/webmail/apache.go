package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"switchboard/internal/testbed"
)

// Where Debian's packages put things.
const (
	roundcubeDocRoot  = "/var/lib/roundcube/public_html"
	roundcubeEtc      = "/etc/roundcube" // defaults.inc.php, mimetypes.php
	apacheModules     = "/usr/lib/apache2/modules"
	apacheStartWait   = 15 * time.Second
	apacheStopGrace   = 5 * time.Second
	apachePHPModule   = "libphp8.2.so"
	apacheWorkers     = 12 // prefork children: a browser opens at most 6 connections per host
	apacheRunUser     = "www-data"
	roundcubeDESBytes = 12 // des_key: 24 hex characters
)

// vhost is one mode's Roundcube: its own port, config dir and IMAP host.
type vhost struct {
	Mode     string
	Addr     string // 127.0.0.1:port
	IMAPHost string // Roundcube's imap_host: "ip:port" or "ssl://ip:port"
	CAFile   string // for ssl://: the CA to verify the server with
	dir      string // ROUNDCUBE_CONFIG_DIR, database, logs, temp
	access   string // access log
}

// apache is one private Apache (prefork + mod_php) serving every vhost.
type apache struct {
	dir   string
	cmd   *exec.Cmd
	donec chan struct{}
}

// startApache writes the configuration of Apache and of each vhost's
// Roundcube and starts Apache in the foreground.
func startApache(dir string, vhosts []*vhost) (*apache, error) {
	uid, gid, err := lookup(apacheRunUser)
	if err != nil {
		return nil, err
	}
	// www-data walks through to each vhost's directory.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `ServerName 127.0.0.1
PidFile %[1]s/apache.pid
DefaultRuntimeDir %[1]s
Mutex file:%[1]s default
User %[2]s
Group %[2]s
ErrorLog %[1]s/error.log
LogLevel warn
LoadModule mpm_prefork_module %[3]s/mod_mpm_prefork.so
LoadModule authz_core_module %[3]s/mod_authz_core.so
LoadModule mime_module %[3]s/mod_mime.so
LoadModule dir_module %[3]s/mod_dir.so
LoadModule env_module %[3]s/mod_env.so
LoadModule php_module %[3]s/%[4]s
TypesConfig /etc/mime.types
StartServers %[5]d
MinSpareServers %[5]d
MaxSpareServers %[5]d
MaxRequestWorkers %[5]d
KeepAlive On
DirectoryIndex index.php
<FilesMatch "\.php$">
	SetHandler application/x-httpd-php
</FilesMatch>
LogFormat "%%h %%t \"%%r\" %%>s %%b %%D" timed
<Directory />
	AllowOverride None
	Require all denied
</Directory>
<Directory %[6]s>
	Options FollowSymLinks
	AllowOverride None
	Require all granted
</Directory>
`, dir, apacheRunUser, apacheModules, apachePHPModule, apacheWorkers, roundcubeDocRoot)
	for _, v := range vhosts {
		v.dir = filepath.Join(dir, "rc-"+v.Mode)
		v.access = filepath.Join(dir, "access-"+v.Mode+".log")
		if err := writeRoundcubeConfig(v, uid, gid); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, `Listen %[1]s
<VirtualHost %[1]s>
	DocumentRoot %[2]s
	SetEnv ROUNDCUBE_CONFIG_DIR %[3]s
	CustomLog %[4]s timed
</VirtualHost>
`, v.Addr, roundcubeDocRoot, v.dir, v.access)
	}
	conf := filepath.Join(dir, "apache2.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	a := &apache{dir: dir, donec: make(chan struct{})}
	out, err := os.Create(filepath.Join(dir, "apache.out"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	a.cmd = exec.Command("/usr/sbin/apache2", "-f", conf, "-DFOREGROUND")
	a.cmd.Stdout, a.cmd.Stderr = out, out
	a.cmd.SysProcAttr = testbed.ChildAttr()
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start apache2: %w", err)
	}
	go func() { a.cmd.Wait(); close(a.donec) }()
	deadline := time.Now().Add(apacheStartWait)
	for _, v := range vhosts {
		for {
			code, err := httpStatus("http://" + v.Addr + "/")
			if err == nil && code == 200 {
				break
			}
			select {
			case <-a.donec:
				data, _ := os.ReadFile(filepath.Join(dir, "apache.out"))
				errs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
				return nil, fmt.Errorf("apache2 exited: %s%s", data, errs)
			default:
			}
			if time.Now().After(deadline) {
				a.Stop()
				return nil, fmt.Errorf("apache2: %s not answering 200 (last %d, %v)", v.Addr, code, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return a, nil
}

// Stop ends Apache's process group.
func (a *apache) Stop() {
	pgid := a.cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-a.donec:
	case <-time.After(apacheStopGrace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-a.donec
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
}

// writeRoundcubeConfig writes a vhost's ROUNDCUBE_CONFIG_DIR: Debian's
// defaults.inc.php and mimetypes.php, and a config.inc.php with a SQLite
// database, logs and temp files of its own.
func writeRoundcubeConfig(v *vhost, uid, gid int) error {
	for _, d := range []string{v.dir, filepath.Join(v.dir, "logs"), filepath.Join(v.dir, "temp")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return err
		}
	}
	for _, f := range []string{"defaults.inc.php", "mimetypes.php"} {
		if err := os.Symlink(filepath.Join(roundcubeEtc, f), filepath.Join(v.dir, f)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	key := make([]byte, roundcubeDESBytes)
	rand.Read(key)
	conn := ""
	if v.CAFile != "" {
		conn = fmt.Sprintf(`$config['imap_conn_options'] = ['ssl' => ['verify_peer' => true, 'cafile' => %q]];
`, v.CAFile)
	}
	conf := fmt.Sprintf(`<?php
// Generated by bench/webmail for mode %[1]s.
$config = [];
$config['db_dsnw'] = 'sqlite:///%[2]s/roundcube.db?mode=0640';
$config['imap_host'] = %[3]q;
%[4]s$config['smtp_host'] = '127.0.0.1:1';
$config['des_key'] = %[5]q;
$config['product_name'] = 'Roundcube (%[1]s)';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['log_dir'] = '%[2]s/logs/';
$config['temp_dir'] = '%[2]s/temp/';
$config['enable_installer'] = false;
$config['support_url'] = '';
$config['refresh_interval'] = 0;
$config['session_lifetime'] = 10;
$config['language'] = 'en_US';
`, v.Mode, v.dir, v.IMAPHost, conn, hex.EncodeToString(key))
	path := filepath.Join(v.dir, "config.inc.php")
	if err := os.WriteFile(path, []byte(conf), 0o640); err != nil {
		return err
	}
	return os.Chown(path, 0, gid)
}

// lookup returns a system user's uid and gid.
func lookup(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// httpStatus GETs url and returns the status code.
func httpStatus(url string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
