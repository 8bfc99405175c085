package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
)

// sbinDirs are searched after $PATH: non-root shells often lack them.
var sbinDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin"}

// dovecotLibexecDir is where Debian installs Dovecot's service binaries.
const dovecotLibexecDir = "/usr/lib/dovecot"

// lookTool finds a program in $PATH or in the sbin directories.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range sbinDirs {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("testbed: %s not found in $PATH or %s", name, strings.Join(sbinDirs, ", "))
}

// Check reports everything the harness needs that this machine lacks:
// programs (with the Debian packages that provide them), Dovecot's IMAP and
// POP3 servers, the slapd mdb module, the system users, and root privileges.
// It returns nil when the testbed can run.
func Check() error {
	var problems []string
	tools := []struct{ name, pkg string }{
		{"slapd", "slapd"},
		{"slaptest", "slapd"},
		{"ldapmodify", "ldap-utils"},
		{"dovecot", "dovecot-core"},
		{"doveconf", "dovecot-core"},
	}
	for _, t := range tools {
		if _, err := lookTool(t.name); err != nil {
			problems = append(problems, fmt.Sprintf("%s missing (apt-get install %s)", t.name, t.pkg))
		}
	}
	files := []struct{ path, pkg string }{
		{filepath.Join(dovecotLibexecDir, "imap"), "dovecot-imapd"},
		{filepath.Join(dovecotLibexecDir, "pop3"), "dovecot-pop3d"},
		{filepath.Join(slapdModuleDir, "back_mdb.so"), "slapd"},
		{filepath.Join(slapdSchemaDir, "inetorgperson.schema"), "slapd"},
	}
	for _, f := range files {
		if _, err := os.Stat(f.path); err != nil {
			problems = append(problems, fmt.Sprintf("%s missing (apt-get install %s)", f.path, f.pkg))
		}
	}
	for _, name := range []string{"mail", "dovecot", "dovenull"} {
		if _, err := user.Lookup(name); err != nil {
			problems = append(problems, fmt.Sprintf("system user %s missing (dovecot-core creates dovecot and dovenull; mail comes with base-passwd)", name))
		}
	}
	if os.Geteuid() != 0 {
		problems = append(problems, "not running as root (Dovecot must switch to the mail user)")
	}
	if len(problems) > 0 {
		return errors.New("testbed: cannot run here:\n\t" + strings.Join(problems, "\n\t") +
			"\n`make setup` (scripts/setup.sh), as root, installs the missing packages")
	}
	return nil
}
