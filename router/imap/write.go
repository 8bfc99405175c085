package imap

import "strconv"

// Quotable reports whether s can be sent as an IMAP quoted string to any
// server: printable US-ASCII only.
func Quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// AppendQuoted appends s as a quoted string. s must be Quotable.
func AppendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' {
			dst = append(dst, '\\')
		}
		dst = append(dst, s[i])
	}
	return append(dst, '"')
}

// AppendString appends s as a quoted string when it is Quotable and as a
// non-synchronizing literal (RFC 7888) otherwise.
func AppendString(dst []byte, s string) []byte {
	if Quotable(s) {
		return AppendQuoted(dst, s)
	}
	dst = append(dst, '{')
	dst = strconv.AppendInt(dst, int64(len(s)), 10)
	dst = append(dst, "+}\r\n"...)
	return append(dst, s...)
}
