package main

import (
	"net"
	"os"
)

// sdNotify sends state (newline-separated KEY=VALUE lines, sd_notify(3))
// to the service manager over the datagram socket named by NOTIFY_SOCKET;
// it does nothing outside a Type=notify unit. A name beginning with @ is
// in the abstract namespace.
func sdNotify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	if name[0] == '@' {
		name = "\x00" + name[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err
}
