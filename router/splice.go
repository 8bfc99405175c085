package router

import (
	"time"

	"switchboard/route"
	"switchboard/router/internal/pump"
)

// splice hands the logged-in session to the pump: bytes both ways until
// either side is done, a kick, or the idle timeout; spliceDone ends the
// session. It first flushes what either side's login-phase reader still
// holds, so pipelined commands are not lost.
func (sess *session) splice(b *backendConn) {
	if n := sess.br.Buffered(); n > 0 {
		p, _ := sess.br.Peek(n)
		if _, err := b.W.Write(p); err != nil {
			sess.fail(route.OutcomeOK, err)
			sess.end()
			return
		}
		sess.in += int64(n)
	}
	if n := b.R.Buffered(); n > 0 {
		p, _ := b.R.Peek(n)
		if _, err := sess.w.Write(p); err != nil {
			sess.fail(route.OutcomeOK, err)
			sess.end()
			return
		}
		sess.out += int64(n)
	}
	// The login-phase buffers are not needed any more.
	sess.br.Reset(nil)
	readerPool.Put(sess.br)
	sess.br = nil
	b.R.Reset(nil)
	readerPool.Put(b.R)
	b.R = nil

	srv := sess.srv
	sp := pump.New(
		pump.Side{Conn: sess.conn, TCP: sess.tcp, W: sess.w},
		pump.Side{Conn: b.Conn, TCP: b.TCP, W: b.W},
		&pump.Options{Idle: srv.opts.idleTimeout(), Parker: srv.parker, Done: sess.spliceDone, Panic: sess.splicePanic},
	)
	sess.mu.Lock()
	sess.sp = sp
	kicked := sess.kicked != ""
	sess.mu.Unlock()
	if kicked {
		sp.Kick() // a kick that raced with the login
	}
	sp.Run()
}

// spliceDone runs once both directions of the splice are done: it counts
// the bytes, tells a kicked IMAP client why, and ends the session.
func (sess *session) spliceDone(sp *pump.Splice) {
	r := sp.Result()
	sess.in += r.In
	sess.out += r.Out
	sess.srv.stats.BytesIn.Add(uint64(r.In))
	sess.srv.stats.BytesOut.Add(uint64(r.Out))
	sess.outcome = route.OutcomeOK
	if reason := sess.KickReason(); reason != "" {
		sess.kickedOutcome(reason)
		if sess.l.cfg.Protocol == route.IMAP {
			if sess.conn.SetWriteDeadline(time.Now().Add(byeWriteTimeout)) == nil {
				sess.conn.Write([]byte("* BYE [UNAVAILABLE] " + reason + "\r\n"))
			}
		}
	} else {
		for _, err := range []error{r.UpErr, r.DownErr} {
			if err != nil && !pump.IsQuietClose(err) {
				sess.errMsg = err.Error()
				break
			}
		}
		if r.IdleEnd {
			sess.errMsg = "idle timeout"
		}
	}
	sess.end()
}

// splicePanic counts and logs a panic in a splice direction; the pump
// then ends the splice.
func (sess *session) splicePanic(v any) {
	sess.srv.stats.Panics.Add(1)
	sess.srv.log.Error("splice panic", "cid", sess.id, "panic", v)
	sess.kick("Internal error.")
}
