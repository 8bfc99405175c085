package router

// PreDialReady is how many greeted connections to addr wait in the
// pre-dial pool of proto ("imap" or "pop3").
func (s *Server) PreDialReady(proto, addr string) int {
	p := s.predial
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl := p.pools[poolKey{proto, addr}]; pl != nil {
		return len(pl.conns)
	}
	return 0
}
