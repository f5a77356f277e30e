package smtpd

import "strings"

// remember records an authenticated session, so that EndSessions can find
// it. The table holds only open sessions: forget runs at each one's end.
func (s *Server) remember(ss *session) {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	if s.users == nil {
		s.users = map[string]map[*session]struct{}{}
	}
	u := strings.ToLower(ss.info.User)
	ss.remembered = u
	if s.users[u] == nil {
		s.users[u] = map[*session]struct{}{}
	}
	s.users[u][ss] = struct{}{}
}

func (s *Server) forget(ss *session) {
	if ss.remembered == "" {
		return
	}
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	if set := s.users[ss.remembered]; set != nil {
		delete(set, ss)
		if len(set) == 0 {
			delete(s.users, ss.remembered)
		}
	}
}

// EndSessions ends every open session authenticated as user (its sending
// was suspended): the session context is cancelled, so backend work in
// progress stops, and the connection is closed. It returns how many.
func (s *Server) EndSessions(user, why string) int {
	s.usersMu.Lock()
	set := s.users[strings.ToLower(user)]
	list := make([]*session, 0, len(set))
	for ss := range set {
		list = append(list, ss)
	}
	s.usersMu.Unlock()
	for _, ss := range list {
		ss.log.Info("session ended by the server", "user", user, "why", why)
		ss.frame.End()
		ss.frame.Conn.Close()
	}
	return len(list)
}
