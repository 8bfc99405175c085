package move

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// maxMismatches bounds how many differences a verification error lists.
const maxMismatches = 10

// MismatchError is a verification that found differences.
type MismatchError struct {
	Diffs []string // one line per difference, at most maxMismatches
	Total int
}

func (e *MismatchError) Error() string {
	s := fmt.Sprintf("verify: %d differences between source and destination: %s", e.Total, strings.Join(e.Diffs, "; "))
	if e.Total > len(e.Diffs) {
		s += "; …"
	}
	return s
}

// verify compares both sides folder by folder.
func (mv *run) verify(ctx context.Context) error {
	// Both sides at once: the user waits for this.
	var src []Folder
	var srcErr error
	donec := make(chan struct{})
	go snapshotInto(ctx, mv.src, mv.r.User, &src, &srcErr, donec)
	dst, err := mv.dst.Snapshot(ctx, mv.r.User)
	<-donec
	if err = errors.Join(srcErr, err); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := Compare(src, dst); err != nil {
		return err
	}
	mv.r.Folders = len(dst)
	mv.r.Messages, mv.r.Bytes = totals(dst)
	mv.progressf("verify: %d folders, %d messages, %s: count, UIDVALIDITY, UIDNEXT, GUID and flags equal", mv.r.Folders, mv.r.Messages, size(mv.r.Bytes))
	return nil
}

// snapshotInto is the goroutine that takes the source's snapshot.
func snapshotInto(ctx context.Context, b Backend, user string, out *[]Folder, errp *error, donec chan<- struct{}) {
	defer close(donec)
	*out, *errp = b.Snapshot(ctx, user)
}

// Compare returns a *MismatchError if the folders differ in name,
// message count, UIDVALIDITY, UIDNEXT, mailbox GUID or flags.
func Compare(src, dst []Folder) error {
	e := &MismatchError{}
	add := func(format string, args ...any) {
		e.Total++
		if len(e.Diffs) < maxMismatches {
			e.Diffs = append(e.Diffs, fmt.Sprintf(format, args...))
		}
	}
	byName := make(map[string]Folder, len(dst))
	for _, f := range dst {
		byName[f.Name] = f
	}
	for _, s := range src {
		d, ok := byName[s.Name]
		if !ok {
			add("folder %q missing on the destination", s.Name)
			continue
		}
		delete(byName, s.Name)
		if s.Messages != d.Messages {
			add("%q: %d messages, %d on the destination", s.Name, s.Messages, d.Messages)
		}
		if s.UIDValidity != d.UIDValidity {
			add("%q: UIDVALIDITY %d, %d on the destination", s.Name, s.UIDValidity, d.UIDValidity)
		}
		if s.UIDNext != d.UIDNext {
			add("%q: UIDNEXT %d, %d on the destination", s.Name, s.UIDNext, d.UIDNext)
		}
		if s.GUID != d.GUID {
			add("%q: mailbox GUID %s, %s on the destination", s.Name, s.GUID, d.GUID)
		}
		if s.Flags != d.Flags {
			add("%q: flags differ (%s)", s.Name, firstDiff(s.msgs, d.msgs))
		}
	}
	for name := range byName {
		add("folder %q only on the destination", name)
	}
	if e.Total > 0 {
		return e
	}
	return nil
}

// firstDiff names the first message whose flags differ, both lists
// sorted by UID.
func firstDiff(src, dst []Message) string {
	flags := make(map[uint32]string, len(dst))
	for _, m := range dst {
		flags[m.UID] = strings.Join(m.Flags, " ")
	}
	for _, m := range src {
		f, ok := flags[m.UID]
		if !ok {
			return fmt.Sprintf("UID %d missing on the destination", m.UID)
		}
		if s := strings.Join(m.Flags, " "); s != f {
			return fmt.Sprintf("UID %d: (%s), (%s) on the destination", m.UID, s, f)
		}
	}
	return "a UID only on the destination"
}
