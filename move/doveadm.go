package move

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"switchboard/internal/secret"
)

const (
	// maxAnswerBytes bounds what is read of one doveadm HTTP answer; a
	// fetch of every message's flags of a 100,000-message mailbox is
	// about 10 MB.
	maxAnswerBytes = 256 << 20
	// exitNoUsersKicked is doveadm kick's exit code (EX_NOUSER's
	// neighbour, 68) when nobody was logged in: not a failure here.
	exitNoUsersKicked = 68
	// exitUnknownUser is doveadm's exit code for a user the backend's
	// userdb does not know (EX_NOUSER).
	exitUnknownUser = 67
)

// ErrUnknownUser wraps a doveadm error for a user the backend does not
// know.
var ErrUnknownUser = errors.New("move: the backend does not know the user")

// Doveadm drives one Dovecot backend through its doveadm HTTP API (POST
// /doveadm/v1, Basic auth "doveadm:<doveadm_password>"). The backend's
// dovecot.conf needs:
//
//	doveadm_password = <file   # shared by every backend
//	doveadm_port = 2425         # the TCP protocol, for dsync between backends
//	service doveadm {
//	  inet_listener { port = 2425 }
//	  inet_listener http { port = 8080 }
//	}
//
// Its methods are safe for concurrent use.
type Doveadm struct {
	// Name is the backend's host value, for messages.
	Name string
	// URL is the API's URL, "http://10.0.0.1:8080/doveadm/v1".
	URL string
	// TCPAddr is "host:port" of the backend's doveadm TCP protocol, as
	// the other backends reach it for dsync.
	TCPAddr string
	// Password is doveadm_password.
	Password secret.String
	// Client sends the requests; nil means one without a timeout of its
	// own (every call has a context).
	Client *http.Client
}

// ExitError is a doveadm command that failed on the backend.
type ExitError struct {
	Backend string
	Command string
	Code    int // doveadm's exit code (sysexits.h)
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("doveadm %s on %s: exit code %d (%s)", e.Command, e.Backend, e.Code, exitText(e.Code))
}

// Unwrap makes errors.Is(err, ErrUnknownUser) work.
func (e *ExitError) Unwrap() error {
	if e.Code == exitUnknownUser {
		return ErrUnknownUser
	}
	return nil
}

// exitText names the sysexits.h codes doveadm uses.
func exitText(code int) string {
	switch code {
	case 2:
		return "dsync: the mailboxes changed during the sync, run it again"
	case 64:
		return "usage error"
	case 65:
		return "data error"
	case 67:
		return "unknown user"
	case 68:
		return "no such host or nothing found"
	case 69:
		return "service unavailable"
	case 73:
		return "cannot create"
	case 75:
		return "temporary failure"
	case 77:
		return "permission denied"
	case 78:
		return "configuration error"
	}
	return "failure"
}

// call runs one doveadm command and decodes its result list into out.
func (d *Doveadm) call(ctx context.Context, cmd string, params map[string]any, out any) error {
	body, err := json.Marshal([]any{[]any{cmd, params, "c1"}})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("doveadm %s on %s: %w", cmd, d.Name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("doveadm", string(d.Password))
	hc := d.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("doveadm %s on %s: %w", cmd, d.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("doveadm %s on %s: %w", cmd, d.Name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("doveadm %s on %s: HTTP %s", cmd, d.Name, resp.Status)
	}
	// [["doveadmResponse", RESULT, "c1"]] or [["error", {"exitCode": N}, "c1"]]
	var answer [][]json.RawMessage
	if err := json.Unmarshal(data, &answer); err != nil || len(answer) != 1 || len(answer[0]) < 2 {
		return fmt.Errorf("doveadm %s on %s: unexpected answer %.200q", cmd, d.Name, data)
	}
	var kind string
	if err := json.Unmarshal(answer[0][0], &kind); err != nil {
		return fmt.Errorf("doveadm %s on %s: unexpected answer %.200q", cmd, d.Name, data)
	}
	if kind == "error" {
		var e struct {
			ExitCode int `json:"exitCode"`
		}
		if err := json.Unmarshal(answer[0][1], &e); err != nil {
			return fmt.Errorf("doveadm %s on %s: unexpected error %.200q", cmd, d.Name, data)
		}
		return &ExitError{Backend: d.Name, Command: cmd, Code: e.ExitCode}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer[0][1], out); err != nil {
		return fmt.Errorf("doveadm %s on %s: %w", cmd, d.Name, err)
	}
	return nil
}

// Folder is one mailbox of a user as doveadm mailbox status reports it.
type Folder struct {
	Name        string
	GUID        string // the mailbox GUID, which dsync keeps
	Messages    int
	UIDValidity uint32
	UIDNext     uint32
	VSize       int64 // bytes, as IMAP counts them (CRLF)
	// Flags is a digest of every message's UID and flags (without
	// \Recent, which is per session); Status leaves it empty, Snapshot
	// fills it.
	Flags string

	msgs []Message // Snapshot's messages, to name a difference
}

// Status returns the user's folders, sorted by name.
func (d *Doveadm) Status(ctx context.Context, user string) ([]Folder, error) {
	var rows []map[string]string
	err := d.call(ctx, "mailboxStatus", map[string]any{
		"user":        user,
		"field":       []string{"messages", "uidvalidity", "uidnext", "guid", "vsize"},
		"mailboxMask": []string{"*"},
	}, &rows)
	if err != nil {
		return nil, err
	}
	folders := make([]Folder, 0, len(rows))
	for _, r := range rows {
		f := Folder{Name: r["mailbox"], GUID: r["guid"]}
		var errs []error
		f.Messages, errs = atoi(r["messages"], errs)
		var v, n int64
		v, errs = parseInt(r["uidvalidity"], errs)
		n, errs = parseInt(r["uidnext"], errs)
		f.VSize, errs = parseInt(r["vsize"], errs)
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("doveadm mailbox status on %s: folder %q: %w", d.Name, f.Name, err)
		}
		f.UIDValidity, f.UIDNext = uint32(v), uint32(n)
		folders = append(folders, f)
	}
	sort.Slice(folders, func(i, j int) bool { return folders[i].Name < folders[j].Name })
	return folders, nil
}

func parseInt(s string, errs []error) (int64, []error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		errs = append(errs, err)
	}
	return n, errs
}

func atoi(s string, errs []error) (int, []error) {
	n, errs := parseInt(s, errs)
	return int(n), errs
}

// Message is one message as Fetch reports it.
type Message struct {
	Mailbox   string
	UID       uint32
	Flags     []string // sorted, without \Recent
	MessageID string   // the Message-ID header
}

// Messages returns every message of the user: folder, UID, flags and
// Message-ID.
func (d *Doveadm) Messages(ctx context.Context, user string) ([]Message, error) {
	return d.fetch(ctx, user, "mailbox", "uid", "flags", "hdr.message-id")
}

// fetch runs doveadm fetch of fields for every message. Without
// hdr.message-id it reads the index only, not the mail files.
func (d *Doveadm) fetch(ctx context.Context, user string, fields ...string) ([]Message, error) {
	var rows []map[string]string
	err := d.call(ctx, "fetch", map[string]any{
		"user":  user,
		"field": fields,
		"query": []string{"all"},
	}, &rows)
	if err != nil {
		return nil, err
	}
	msgs := make([]Message, 0, len(rows))
	for _, r := range rows {
		uid, err := strconv.ParseUint(r["uid"], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("doveadm fetch on %s: uid %q: %w", d.Name, r["uid"], err)
		}
		var flags []string
		for _, f := range strings.Fields(r["flags"]) {
			if !strings.EqualFold(f, `\Recent`) {
				flags = append(flags, f)
			}
		}
		sort.Strings(flags)
		msgs = append(msgs, Message{Mailbox: r["mailbox"], UID: uint32(uid), Flags: flags, MessageID: strings.TrimSpace(r["hdr.message-id"])})
	}
	return msgs, nil
}

// Snapshot returns the user's folders with their flag digests.
func (d *Doveadm) Snapshot(ctx context.Context, user string) ([]Folder, error) {
	folders, err := d.Status(ctx, user)
	if err != nil {
		return nil, err
	}
	msgs, err := d.fetch(ctx, user, "mailbox", "uid", "flags")
	if err != nil {
		return nil, err
	}
	byBox := make(map[string][]Message)
	for _, m := range msgs {
		byBox[m.Mailbox] = append(byBox[m.Mailbox], m)
	}
	for i := range folders {
		folders[i].Flags = flagDigest(byBox[folders[i].Name])
		folders[i].msgs = byBox[folders[i].Name]
	}
	return folders, nil
}

// flagDigest is a short SHA-256 of "uid flags..." lines in UID order.
func flagDigest(msgs []Message) string {
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].UID < msgs[j].UID })
	h := sha256.New()
	for _, m := range msgs {
		fmt.Fprintf(h, "%d %s\n", m.UID, strings.Join(m.Flags, " "))
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// PullFrom makes the user's mailbox on d identical to the one on source:
// doveadm backup -R -u USER tcp:SOURCE run on d, where source is the
// source's doveadm TCP address. Only d is written.
//
// With full, dsync compares every message's flags (doveadm backup -f)
// instead of only the changes since the modseq both sides last had in
// common: a flag changed on the source while an earlier pass ran can
// hide below that modseq, and a fast pass then never copies it.
func (d *Doveadm) PullFrom(ctx context.Context, user, source string, full bool) error {
	return d.call(ctx, "backup", map[string]any{
		"user":        user,
		"reverseSync": true,
		"fullSync":    full,
		"destination": []string{"tcp:" + source},
	}, nil)
}

// DsyncAddr returns TCPAddr.
func (d *Doveadm) DsyncAddr() string { return d.TCPAddr }

// Kick closes the user's IMAP and POP3 sessions on the backend.
func (d *Doveadm) Kick(ctx context.Context, user string) error {
	err := d.call(ctx, "kick", map[string]any{"mask": []string{user}}, nil)
	var ee *ExitError
	if errors.As(err, &ee) && ee.Code == exitNoUsersKicked {
		return nil
	}
	return err
}

// Sessions returns how many sessions the user has on the backend.
func (d *Doveadm) Sessions(ctx context.Context, user string) (int, error) {
	var rows []map[string]any
	if err := d.call(ctx, "who", map[string]any{"mask": []string{user}}, &rows); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rows {
		c, _ := r["connections"].(string)
		k, err := strconv.Atoi(c)
		if err != nil {
			k = 1
		}
		n += k
	}
	return n, nil
}
