package main

import (
	"net"
	"testing"
)

func TestSameAddr(t *testing.T) {
	tests := []struct {
		bound      string
		configured string
		want       bool
	}{
		{"0.0.0.0:993", "0.0.0.0:993", true},
		{"[::]:993", "0.0.0.0:993", true}, // ListenStream=993 binds [::]
		{"0.0.0.0:993", ":993", true},
		{"127.0.0.1:143", "127.0.0.1:143", true},
		{"127.0.0.1:143", "127.0.0.2:143", false},
		{"127.0.0.1:143", "127.0.0.1:993", false},
		{"[::ffff:127.0.0.1]:143", "127.0.0.1:143", true},
		{"0.0.0.0:143", "127.0.0.1:143", false},
		{"127.0.0.1:143", "mail.example.org:143", false},
		{"127.0.0.1:143", "127.0.0.1", false},
	}
	for _, tt := range tests {
		ta, err := net.ResolveTCPAddr("tcp", tt.bound)
		if err != nil {
			t.Fatal(err)
		}
		if got := sameAddr(ta, tt.configured); got != tt.want {
			t.Errorf("sameAddr(%s, %q) = %v, want %v", tt.bound, tt.configured, got, tt.want)
		}
	}
}

func TestEnvWithout(t *testing.T) {
	got := envWithout([]string{"LISTEN_FDS=2", "PATH=/bin", "LISTEN_FDSX=1", "LISTEN_PID=3"}, envListenFDs, envListenPID)
	if len(got) != 2 || got[0] != "PATH=/bin" || got[1] != "LISTEN_FDSX=1" {
		t.Fatalf("envWithout = %q", got)
	}
}
