package move

import (
	"errors"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	inbox := func(mod func(*Folder)) []Folder {
		f := Folder{Name: "INBOX", GUID: "g1", Messages: 2, UIDValidity: 7, UIDNext: 3,
			msgs: []Message{{UID: 1, Flags: []string{`\Seen`}}, {UID: 2}}}
		f.Flags = flagDigest(f.msgs)
		if mod != nil {
			mod(&f)
			f.Flags = flagDigest(f.msgs)
		}
		return []Folder{f}
	}
	tests := []struct {
		name string
		dst  []Folder
		want string // "" for equal
	}{
		{"equal", inbox(nil), ""},
		{"count", inbox(func(f *Folder) { f.Messages = 3 }), "2 messages, 3 on the destination"},
		{"uidvalidity", inbox(func(f *Folder) { f.UIDValidity = 8 }), "UIDVALIDITY 7, 8"},
		{"uidnext", inbox(func(f *Folder) { f.UIDNext = 4 }), "UIDNEXT 3, 4"},
		{"guid", inbox(func(f *Folder) { f.GUID = "g2" }), "mailbox GUID g1, g2"},
		{"flags", inbox(func(f *Folder) { f.msgs = []Message{{UID: 1}, {UID: 2}} }), `UID 1: (\Seen), ()`},
		{"missing folder", nil, `folder "INBOX" missing`},
		{"extra folder", append(inbox(nil), Folder{Name: "Junk"}), `folder "Junk" only on the destination`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Compare(inbox(nil), tt.dst)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Compare = %v, want nil", err)
				}
				return
			}
			var me *MismatchError
			if !errors.As(err, &me) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compare = %v, want a MismatchError with %q", err, tt.want)
			}
		})
	}
}
