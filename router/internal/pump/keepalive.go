package pump

import "time"

// TCP keepalive on client connections: a client that vanished without a
// FIN (a phone that lost its network) is found within about four minutes,
// and an IDLE-ing client gets at most one probe per two quiet minutes,
// the cadence of Dovecot's own "* OK Still here".
const (
	ClientKeepAliveIdle     = 2 * time.Minute
	ClientKeepAliveInterval = 30 * time.Second
	ClientKeepAliveCount    = 4
)
