package faults

import (
	"math/rand"
	"syscall"
	"testing"
	"time"
)

// TestSuspendedCarrier stops `messor pickup` (SIGSTOP, as Ctrl-Z does) in
// the middle of a transfer for longer than the idle timeout (30 s), then
// lets it go on (SIGCONT, as fg does). The host answered all along, its
// replies waiting in the socket: the carrier was not watching, so the run
// is no stall, and it carries everything.
func TestSuspendedCarrier(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(21))
	const size = 8 << 20
	e.send("alpha", "beta", map[string][]byte{"suspend/big.bin": randBytes(r, size)})
	e.Home.WriteHostsFile("alpha")
	p := e.proxy("alpha")
	p.SetRate(1 << 20)
	cmd, out, exited := e.startCLI(t, "pickup")
	for p.BytesUp()+p.BytesDown() < size/4 {
		select {
		case err := <-exited:
			t.Fatalf("the pickup ended before the stop: %v\n%s", err, out)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(40 * time.Second)
	cmd.Process.Signal(syscall.SIGCONT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("a carrier stopped and continued took the host for stalled: %v\n%s", err, out)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("the pickup still ran 2 minutes after it was continued\n%s", out)
	}
	if n := len(e.OutboxFiles("alpha")); n != 0 {
		t.Fatalf("the pickup left %d files behind\n%s", n, out)
	}
}
