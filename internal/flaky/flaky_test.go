package flaky

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// echoServer returns the address of a server that echoes every connection.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dial(t *testing.T, p *Proxy) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// echo sends data and reads it back, writing from another goroutine so
// large payloads cannot deadlock.
func echo(t *testing.T, c net.Conn, data []byte) {
	t.Helper()
	werr := make(chan error, 1)
	go func() { _, err := c.Write(data); werr <- err }()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo: reading: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("echo: writing: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("echo: data corrupted")
	}
}

// expectClosed checks that the next read from c finds the connection closed
// rather than data or a timeout.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	n, err := c.Read(make([]byte, 1))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after cut: %d bytes, %v; want the connection closed", n, err)
	}
}

// eventually waits for cond, which must turn true promptly.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestForward(t *testing.T) {
	p := New(t, echoServer(t))
	c := dial(t, p)
	data := random(t, 1<<20)
	echo(t, c, data)
	c.CloseWrite()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after half-close: %d, %v; want EOF", n, err)
	}
	if p.BytesUp() != 1<<20 || p.BytesDown() != 1<<20 || p.Conns() != 1 {
		t.Fatalf("up %d down %d conns %d; want 1MiB, 1MiB, 1", p.BytesUp(), p.BytesDown(), p.Conns())
	}
}

func TestCutAfter(t *testing.T) {
	p := New(t, echoServer(t))
	p.CutAfter(100)
	for i := 1; i <= 2; i++ { // every connection is cut
		c := dial(t, p)
		if _, err := c.Write(random(t, 1000)); err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(c)
		if len(got) > 100 {
			t.Fatalf("read %d bytes through a link cut after 100", len(got))
		}
		if total := p.BytesUp() + p.BytesDown(); total != int64(100*i) {
			t.Fatalf("connection %d: %d bytes carried in all; want %d", i, total, 100*i)
		}
	}
}

func TestCutAfterCountsFromWhenSet(t *testing.T) {
	p := New(t, echoServer(t))
	c := dial(t, p)
	echo(t, c, random(t, 50))
	p.CutAfter(60)
	echo(t, c, random(t, 30)) // 30 up and 30 down use up the 60
	expectClosed(t, c)
	if p.BytesUp() != 80 || p.BytesDown() != 80 {
		t.Fatalf("up %d down %d; want 80, 80", p.BytesUp(), p.BytesDown())
	}

	p.CutAfter(0)
	echo(t, dial(t, p), random(t, 1000))
}

func TestCutAll(t *testing.T) {
	p := New(t, echoServer(t))
	a, b := dial(t, p), dial(t, p)
	echo(t, a, []byte("a"))
	echo(t, b, []byte("b"))
	p.CutAll()
	expectClosed(t, a)
	expectClosed(t, b)
	echo(t, dial(t, p), []byte("c"))
	if p.Conns() != 3 {
		t.Fatalf("Conns = %d; want 3", p.Conns())
	}
}

func TestStall(t *testing.T) {
	p := New(t, echoServer(t))
	c := dial(t, p)
	echo(t, c, []byte("before"))
	p.Stall(true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	// Nothing may come back while stalled (a short wait can only miss a
	// bug, never flag a correct proxy).
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 10)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read while stalled: %d bytes, %v; want a timeout", n, err)
	}
	if p.BytesUp() != 6 || p.BytesDown() != 6 {
		t.Fatalf("up %d down %d while stalled; want 6, 6", p.BytesUp(), p.BytesDown())
	}
	p.Stall(false)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after stall: %q, %v; want the held data", got, err)
	}
}

func TestRefuse(t *testing.T) {
	p := New(t, echoServer(t))
	p.Refuse(true)
	expectClosed(t, dial(t, p))
	if p.Conns() != 1 || p.BytesUp() != 0 {
		t.Fatalf("Conns %d BytesUp %d; want 1, 0", p.Conns(), p.BytesUp())
	}
	p.Refuse(false)
	echo(t, dial(t, p), []byte("again"))
}

func TestLatency(t *testing.T) {
	p := New(t, echoServer(t))
	c := dial(t, p)
	p.SetLatency(5 * time.Millisecond)
	echo(t, c, random(t, 256<<10))
	p.SetLatency(0)
	echo(t, c, random(t, 1000))
}

func TestRate(t *testing.T) {
	p := New(t, echoServer(t))
	c := dial(t, p)
	p.SetRate(1 << 20)
	echo(t, c, random(t, 200<<10))
	p.SetRate(0)
	echo(t, c, random(t, 1<<20))
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	b := newBucket(1000, t0) // burst: 100 bytes
	for _, step := range []struct {
		ms, n, wantN int
		wantWait     time.Duration
	}{
		{0, 500, 100, 0},                    // the initial burst
		{0, 500, 0, 100 * time.Millisecond}, // empty: wait for a burst's worth
		{50, 500, 0, 50 * time.Millisecond}, // half refilled
		{100, 500, 100, 0},                  // refilled
		{110, 5, 5, 0},                      // a small write takes what it needs
		{110, 50, 0, 45 * time.Millisecond}, // and waits only for itself
		{10000, 500, 100, 0},                // idle time banks no more than a burst
		{10000, 1, 0, time.Millisecond},
		{10001, 1, 1, 0},
		{9995, 1, 0, time.Millisecond}, // a clock going backwards is ignored
	} {
		n, wait := b.take(at(step.ms), step.n)
		if n != step.wantN || (wait-step.wantWait).Abs() > time.Microsecond {
			t.Errorf("take(t+%dms, %d) = %d, %v; want %d, %v", step.ms, step.n, n, wait, step.wantN, step.wantWait)
		}
	}
	if n, wait := (&bucket{}).take(t0, 1<<30); n != 1<<30 || wait != 0 {
		t.Errorf("unlimited bucket: %d, %v", n, wait)
	}
}

// TestKnobsConcurrently turns knobs while data flows; run with -race.
func TestKnobsConcurrently(t *testing.T) {
	p := New(t, echoServer(t))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			p.Stall(i%2 == 0)
			p.SetLatency(time.Duration(i%3) * time.Millisecond)
			p.SetRate(int64(i%2) * 8 << 20)
			p.CutAfter(0)
			p.Refuse(false)
			time.Sleep(time.Millisecond)
		}
	}()
	var conns sync.WaitGroup
	for range 4 {
		c := dial(t, p)
		conns.Add(1)
		go func() {
			defer conns.Done()
			data := random(t, 64<<10)
			go c.Write(data)
			got := make([]byte, len(data))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, data) {
				t.Errorf("transfer: %v", err)
			}
		}()
	}
	conns.Wait()
	close(stop)
	wg.Wait()
	p.Stall(false)
	if p.BytesUp() != 4*64<<10 {
		t.Errorf("BytesUp = %d; want %d", p.BytesUp(), 4*64<<10)
	}
}
