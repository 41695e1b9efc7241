package carrier

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// watchPacket is an SFTP packet of type typ with id and the strings args
// (a uint32 length each), then raw.
func watchPacket(typ byte, id uint32, args []string, raw []byte) []byte {
	body := []byte{typ}
	body = binary.BigEndian.AppendUint32(body, id)
	for _, a := range args {
		body = binary.BigEndian.AppendUint32(body, uint32(len(a)))
		body = append(body, a...)
	}
	body = append(body, raw...)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// feedIn feeds b to f in pieces of n bytes (the way reads and writes
// split packets anywhere).
func feedIn(b []byte, n int, feed func([]byte)) {
	for len(b) > 0 {
		k := min(n, len(b))
		feed(b[:k])
		b = b[k:]
	}
}

// TestSFTPWatchCounts: requests and replies are counted and named however
// the stream is split, a write's content is passed over, a handle's
// requests name the path opened, and a channel is stalled only with a
// request outstanding and our reader waiting for longer than idle.
func TestSFTPWatchCounts(t *testing.T) {
	for _, piece := range []int{1, 3, 7, 4096} {
		var sh sftpShared
		w := newSFTPWatch(&sh)
		var out []byte
		out = append(out, watchPacket(3, 1, []string{"messor/outbox/b/x"}, make([]byte, 12))...)
		data := strings.Repeat("d", 70000)
		write := binary.BigEndian.AppendUint64(nil, 0)
		write = binary.BigEndian.AppendUint32(write, uint32(len(data)))
		feedIn(out, piece, w.sent)
		feedIn(watchPacket(102, 1, []string{"h1"}, nil), piece, func(p []byte) { w.readEnd(p, nil) })
		feedIn(watchPacket(6, 2, []string{"h1"}, append(write, data...)), piece, w.sent)
		if got := sh.unsynced.Load(); got != int64(len(data)) {
			t.Fatalf("piece %d: %d bytes written counted, want %d", piece, got, len(data))
		}
		w.readStart()
		now := time.Now()
		if _, ok := w.stalled(now.Add(time.Second), 2*time.Second, time.Time{}); ok {
			t.Fatalf("piece %d: stalled within the idle timeout", piece)
		}
		what, ok := w.stalled(now.Add(3*time.Second), 2*time.Second, time.Time{})
		if !ok || what != "write messor/outbox/b/x" {
			t.Fatalf("piece %d: stalled %v on %q, want the write", piece, ok, what)
		}
		w.readEnd(nil, nil)
		if _, ok := w.stalled(now.Add(time.Hour), 2*time.Second, time.Time{}); ok {
			t.Fatalf("piece %d: stalled while our reader was not waiting", piece)
		}
		// The write's reply: the fsync alone is outstanding, and may
		// take twice the idle timeout.
		feedIn(watchPacket(101, 2, nil, make([]byte, 12)), piece, func(p []byte) { w.readEnd(p, nil) })
		feedIn(watchPacket(200, 3, []string{"fsync@openssh.com", "h1"}, nil), piece, w.sent)
		w.readStart()
		now = time.Now()
		if _, ok := w.stalled(now.Add(3*time.Second), 2*time.Second, time.Time{}); ok {
			t.Fatalf("piece %d: an fsync stalled within twice the idle timeout", piece)
		}
		if what, ok := w.stalled(now.Add(5*time.Second), 2*time.Second, time.Time{}); !ok || what != "fsync messor/outbox/b/x" {
			t.Fatalf("piece %d: stalled %v on %q, want the fsync", piece, ok, what)
		}
		feedIn(watchPacket(101, 3, nil, make([]byte, 12)), piece, func(p []byte) { w.readEnd(p, nil) })
		if _, ok := w.stalled(now.Add(time.Hour), 2*time.Second, time.Time{}); ok || len(w.pending) != 0 {
			t.Fatalf("piece %d: stalled with nothing outstanding (%v)", piece, w.pending)
		}
	}
}

// TestSFTPWatchOtherChannel: over a slow link one channel's reply may wait
// behind another's data, so a byte on any of the session's SFTP channels
// counts as life for all; with none for the idle timeout, the channel
// waiting stalls.
func TestSFTPWatchOtherChannel(t *testing.T) {
	var sh sftpShared
	a, b := newSFTPWatch(&sh), newSFTPWatch(&sh)
	a.sent(watchPacket(17, 1, []string{"messor/outbox/b/x"}, nil))
	a.readStart()
	start := time.Now()
	time.Sleep(10 * time.Millisecond)
	b.sent(watchPacket(5, 1, []string{"h"}, make([]byte, 12)))
	b.readEnd([]byte{0, 0}, nil) // part of a reply on the other channel
	idle := 5 * time.Millisecond
	if _, ok := a.stalled(start.Add(idle+5*time.Millisecond), idle, time.Time{}); ok {
		t.Fatal("stalled while another channel's reply was coming")
	}
	if what, ok := a.stalled(time.Now().Add(time.Hour), idle, time.Time{}); !ok || what != "stat messor/outbox/b/x" {
		t.Fatalf("stalled %v on %q, want the stat", ok, what)
	}
}

// BenchmarkSFTPWatchData is the watch's cost per byte of data replies, as
// pkg/sftp reads them (32 KiB at a time, 128 KiB replies).
func BenchmarkSFTPWatchData(b *testing.B) {
	w := newSFTPWatch(nil)
	reply := watchPacket(103, 1, []string{strings.Repeat("d", maxPacket)}, nil)
	b.SetBytes(int64(len(reply)))
	for b.Loop() {
		w.sent(watchPacket(5, 1, []string{"h"}, make([]byte, 12)))
		feedIn(reply, 32<<10, func(p []byte) { w.readStart(); w.readEnd(p, nil) })
	}
}

// TestSFTPWatchSyncOnOtherLane: while one lane's fsync is flushing a lot
// of data (its allowance is long), another lane's request waits behind the
// same disk (a journal commit) and no byte comes on any channel. The host
// is busy, not stalled: no channel of the session is given up before the
// fsync's own allowance ends.
func TestSFTPWatchSyncOnOtherLane(t *testing.T) {
	s := &Session{sessionState: &sessionState{watches: map[*sftpWatch]bool{}}}
	a, b := newSFTPWatch(&s.sftpShared), newSFTPWatch(&s.sftpShared)
	s.addWatch(a)
	s.addWatch(b)
	s.sftpShared.unsynced.Store(100 << 20) // 20 s more for a directory's sync
	a.sent(watchPacket(200, 1, []string{"fsync@openssh.com", "dirhandle"}, nil))
	b.sent(watchPacket(4, 1, []string{"filehandle"}, nil))
	a.readStart()
	b.readStart()
	const idle = 2 * time.Second
	now := time.Now()
	if what, ok := s.sftpStalled(now.Add(3*idle), idle); ok {
		t.Fatalf("stalled on %q while another lane's fsync had 24 s to go", what)
	}
	if what, ok := s.sftpStalled(now.Add(time.Minute), idle); !ok || !strings.HasPrefix(what, "fsync") && what != "close " {
		t.Fatalf("stalled %v on %q past the fsync's allowance", ok, what)
	}
}

// TestSFTPWatchTrickleElsewhere: a hostile host that answers nothing on one
// channel and trickles bytes nobody asked for on another (a reply to no
// request, a packet that never ends) does not keep the session alive: only
// bytes on a channel waiting for replies are life for the others.
func TestSFTPWatchTrickleElsewhere(t *testing.T) {
	var sh sftpShared
	a, b := newSFTPWatch(&sh), newSFTPWatch(&sh)
	a.sent(watchPacket(17, 1, []string{"messor/outbox/b/x"}, nil))
	a.readStart()
	const idle = 20 * time.Millisecond
	b.readEnd(binary.BigEndian.AppendUint32(nil, 1<<20), nil) // a long packet's length
	for range 8 {
		time.Sleep(idle / 2)
		b.readEnd([]byte{0}, nil)
	}
	if what, ok := a.stalled(time.Now(), idle, time.Time{}); !ok || what != "stat messor/outbox/b/x" {
		t.Fatalf("stalled %v on %q while the host only trickled bytes asked for by nothing", ok, what)
	}
}
