package faults

import (
	"bytes"
	"math/rand"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messor-sync/messor/internal/flaky"
)

// suspendIdle is the idle timeout the suspension tests give the CLI
// (--idle-timeout): short, so that a stop three times as long is quick.
const suspendIdle = 4 * time.Second

// TestSuspendedCarrier stops `messor pickup` (SIGSTOP, as Ctrl-Z does) in
// the middle of a transfer for three times its idle timeout, then lets it
// go on (SIGCONT, as fg does). The host answered all along, its replies
// waiting in the socket: the carrier was not watching, so the run is no
// stall, and it carries everything. The same timeout then does give up on
// a link that goes silent, so the stop really outlasted it.
func TestSuspendedCarrier(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "alpha", "beta")
	r := rand.New(rand.NewSource(21))
	const size = 8 << 20
	e.send("alpha", "beta", map[string][]byte{"suspend/big.bin": randBytes(r, size)})
	e.Home.WriteHostsFile("alpha")
	p := e.proxy("alpha")
	p.SetRate(1 << 20)
	idle := "--idle-timeout=" + suspendIdle.String()
	cmd, out, exited := e.startCLI(t, "pickup", idle)
	waitCarried(t, p.BytesUp()+p.BytesDown()+size/4, p, exited, out)
	cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(3 * suspendIdle)
	cmd.Process.Signal(syscall.SIGCONT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("a carrier stopped and continued took the host for stalled: %v\n%s", err, out)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the pickup still ran 2 minutes after it was continued\n%s", out)
	}
	if n := len(e.OutboxFiles("alpha")); n != 0 {
		t.Fatalf("the pickup left %d files behind\n%s", n, out)
	}

	e.send("alpha", "beta", map[string][]byte{"suspend/second.bin": randBytes(r, size)})
	cmd, out, exited = e.startCLI(t, "pickup", idle)
	waitCarried(t, p.BytesUp()+p.BytesDown()+size/4, p, exited, out)
	p.Stall(true)
	defer p.Stall(false)
	select {
	case err := <-exited:
		// The stall names the timeout it waited: the default (30 s) would
		// also end this wait, and then the stop above proved nothing.
		if want := "for " + suspendIdle.String(); err == nil || !strings.Contains(out.String(), "stalled") || !strings.Contains(out.String(), want) {
			t.Fatalf("a link silent for longer than --idle-timeout: exit %v, want a stall after %q\n%s", err, want, out)
		}
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("the pickup still waited on a silent link 2 minutes later, with %s\n%s", idle, out)
	}
}

// waitCarried waits until p has carried n bytes (both ways together),
// failing the test if the CLI run ends first.
func waitCarried(t *testing.T, n int64, p *flaky.Proxy, exited <-chan error, out *bytes.Buffer) {
	t.Helper()
	for p.BytesUp()+p.BytesDown() < n {
		select {
		case err := <-exited:
			t.Fatalf("the run ended before the bytes it was to be stopped at: %v\n%s", err, out)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
