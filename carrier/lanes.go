package carrier

import (
	"context"
	"slices"
)

// maxLanes is how many SFTP channels a session uses at most for many
// files. Each is a process of its own on a stock host (sftp-server answers
// one request at a time, and waits in each fsync), so a host with cores to
// spare answers in parallel, and its filesystem can join concurrent fsyncs
// in one journal commit. Four stay within sshd's default MaxSessions (10)
// beside the hash commands of four big files.
const maxLanes = 4

// openLanes makes sure the session has n SFTP channels (at most maxLanes;
// fewer if the host refuses more: each is a session, and sshd's
// MaxSessions bounds them) and returns them as sessions sharing everything
// else; the first is s. Lanes are opened at the same time, in one round
// trip or two; a channel not started when ctx ends is given up.
func (s *Session) openLanes(ctx context.Context, n int) []*Session {
	n = min(n, maxLanes)
	s.laneMu.Lock()
	defer s.laneMu.Unlock()
	if len(s.lanes) == 0 {
		s.lanes = []*Session{s}
	}
	if more := n - len(s.lanes); more > 0 {
		// Started at once; those not started when ctx ends are given up
		// (x/crypto cannot cancel a channel open: a late one is closed
		// when it comes).
		started := make(chan *Session, more)
		for range more {
			go func() {
				// Followed by the idle watch once started: a lane slow
				// to start is given up when ctx ends, never the session
				// (TestStallSlowLaneStart).
				w := newSFTPWatch(&s.sftpShared)
				sc, err := newSFTP(ctx, s.ssh, w, nil)
				if err != nil {
					s.log.Debug("another SFTP channel refused; going on with fewer", "err", err)
					started <- nil
					return
				}
				s.addWatch(w)
				started <- &Session{sessionState: s.sessionState, sftp: sc, watch: w}
			}()
		}
	wait:
		for left := more; left > 0; left-- {
			select {
			case l := <-started:
				if l != nil {
					s.lanes = append(s.lanes, l)
				}
			case <-ctx.Done():
				go func() {
					for range left {
						if l := <-started; l != nil {
							s.dropWatch(l.watch)
							l.sftp.Close()
						}
					}
				}()
				break wait
			}
		}
	}
	return slices.Clone(s.lanes[:min(n, len(s.lanes))])
}

// shedLane closes the session's last lane (not the first) and returns the
// lanes left.
func (s *Session) shedLane() []*Session {
	s.laneMu.Lock()
	defer s.laneMu.Unlock()
	if len(s.lanes) > 1 {
		last := s.lanes[len(s.lanes)-1]
		s.lanes = s.lanes[:len(s.lanes)-1]
		s.dropWatch(last.watch)
		go last.sftp.Close()
	}
	return slices.Clone(s.lanes)
}
