// Package flaky is a user-space TCP proxy that injects link faults for tests:
// cut connections, stalls, latency, a bandwidth cap and refused connections.
// It stands in for netem, which the test kernel lacks. Point a client at
// Proxy.Addr instead of the real server and turn the knobs at any time, from
// any goroutine.
package flaky

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	chunkSize   = 16 << 10 // largest read forwarded as one chunk
	chunkBuffer = 16       // chunks read ahead per direction
)

const (
	up   = 0 // client to target
	down = 1 // target to client
)

// Proxy forwards TCP connections from a loopback listener to a target.
type Proxy struct {
	target string
	ln     net.Listener
	ctx    context.Context // cancelled by Close; bounds dials to target
	cancel context.CancelFunc
	wg     sync.WaitGroup

	bytes [2]atomic.Int64 // forwarded, by direction
	conns atomic.Int64

	mu       sync.Mutex
	links    map[*link]struct{}
	cutAfter int64
	stalled  bool
	refuse   bool
	closed   bool
	latency  time.Duration
	buckets  [2]bucket     // rate limit, by direction
	wake     chan struct{} // closed and replaced whenever a knob changes
}

// link is one proxied connection.
type link struct {
	client, server net.Conn
	carried        int64 // bytes both ways since CutAfter was set; guarded by Proxy.mu
	done           chan struct{}
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.server.Close()
	})
}

// New starts a proxy on 127.0.0.1 forwarding to target ("host:port"). It is
// closed when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("flaky: %v", err)
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		links:  map[*link]struct{}{},
		wake:   make(chan struct{}),
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's address, "127.0.0.1:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Port returns the proxy's TCP port.
func (p *Proxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// BytesUp returns how many bytes were forwarded from clients to the target.
func (p *Proxy) BytesUp() int64 { return p.bytes[up].Load() }

// BytesDown returns how many bytes were forwarded from the target to clients.
func (p *Proxy) BytesDown() int64 { return p.bytes[down].Load() }

// Conns returns how many connections the proxy has accepted, refused ones
// included.
func (p *Proxy) Conns() int { return int(p.conns.Load()) }

// CutAfter makes the proxy close each connection once it has carried n
// bytes, both directions together, counted from this call (for connections
// opened later, from their start). Exactly n bytes get through. n <= 0
// disables cutting.
func (p *Proxy) CutAfter(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAfter = n
	for l := range p.links {
		l.carried = 0
	}
}

// CutAll closes every open connection now. New connections are still
// accepted.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Stall stops (true) or resumes (false) forwarding on all connections
// without closing them. Data sent meanwhile is held, not lost.
func (p *Proxy) Stall(stall bool) {
	p.set(func() { p.stalled = stall })
}

// SetLatency delays every chunk of data by d in each direction: a chunk read
// at time T is forwarded no earlier than T+d. 0 removes the delay.
func (p *Proxy) SetLatency(d time.Duration) {
	p.set(func() { p.latency = d })
}

// SetRate caps each direction at bytesPerSec, shared by all connections.
// 0 removes the cap.
func (p *Proxy) SetRate(bytesPerSec int64) {
	now := time.Now()
	p.set(func() {
		for i := range p.buckets {
			p.buckets[i] = newBucket(bytesPerSec, now)
		}
	})
}

// Refuse makes the proxy accept and immediately close new connections
// (true), or forward them again (false). Open connections are unaffected.
func (p *Proxy) Refuse(refuse bool) {
	p.set(func() { p.refuse = refuse })
}

// set changes knobs under the lock and wakes every waiting forwarder.
func (p *Proxy) set(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
	close(p.wake)
	p.wake = make(chan struct{})
}

// Close stops the proxy: it closes the listener and every connection, and
// waits for its goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cancel()
	p.CutAll()
	p.wg.Wait()
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.conns.Add(1)
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: 10 * time.Second}
	s, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(l, c, s, up) }()
	go func() { defer wg.Done(); p.pipe(l, s, c, down) }()
	wg.Wait()
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

type chunk struct {
	data []byte
	read time.Time
}

// pipe forwards src to dst in direction dir until src ends or the link is
// cut. A reader goroutine timestamps chunks so latency delays each chunk
// rather than capping throughput.
func (p *Proxy) pipe(l *link, src, dst net.Conn, dir int) {
	chunks := make(chan chunk, chunkBuffer)
	go func() {
		defer close(chunks)
		for {
			buf := make([]byte, chunkSize)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case chunks <- chunk{buf[:n], time.Now()}:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if !p.forward(l, dst, c, dir) {
			l.close()
			for range chunks { // wait for the reader to see the close
			}
			return
		}
	}
	// src ended: pass the half-close on.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// forward writes c to dst once latency, stall, rate and cut allow. It
// reports false if the link must close.
func (p *Proxy) forward(l *link, dst net.Conn, c chunk, dir int) bool {
	for {
		p.mu.Lock()
		wake, wait := p.wake, time.Until(c.read.Add(p.latency))
		p.mu.Unlock()
		if wait <= 0 {
			break
		}
		if !p.sleep(l, wake, wait) {
			return false
		}
	}
	b := c.data
	for len(b) > 0 {
		p.mu.Lock()
		wake := p.wake
		n, wait := 0, time.Duration(-1) // -1: until a knob changes
		if !p.stalled {
			n, wait = p.buckets[dir].take(time.Now(), len(b))
		}
		cut := false
		if n > 0 && p.cutAfter > 0 {
			if left := p.cutAfter - l.carried; int64(n) >= left {
				n, cut = int(max(left, 0)), true
			}
			l.carried += int64(n)
		}
		p.mu.Unlock()
		if n > 0 {
			// Count before writing, so the count never lags what the
			// peer has seen; take back what was not written.
			p.bytes[dir].Add(int64(n))
			w, err := dst.Write(b[:n])
			if err != nil {
				p.bytes[dir].Add(int64(w - n))
				return false
			}
			b = b[n:]
		}
		if cut {
			return false
		}
		if n == 0 && !p.sleep(l, wake, wait) {
			return false
		}
	}
	return true
}

// sleep waits for d (forever if d < 0), a knob change or the link's end, and
// reports whether the link is still open.
func (p *Proxy) sleep(l *link, wake <-chan struct{}, d time.Duration) bool {
	var timeout <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-timeout:
	case <-wake:
	case <-l.done:
		return false
	}
	return true
}

// bucket is a token bucket holding up to a tenth of a second's worth of
// bytes. Its clock is passed in, so it can be tested without sleeping.
type bucket struct {
	rate   int64 // bytes per second; 0 means unlimited
	tokens float64
	last   time.Time
}

func newBucket(rate int64, now time.Time) bucket {
	b := bucket{rate: rate, last: now}
	b.tokens = b.burst()
	return b
}

func (b *bucket) burst() float64 { return max(float64(b.rate)/10, 1) }

// take returns how many of n bytes may be sent at now, at least one unless
// it returns 0 and how long to wait before asking again.
func (b *bucket) take(now time.Time, n int) (int, time.Duration) {
	if b.rate <= 0 {
		return n, 0
	}
	if now.After(b.last) {
		b.tokens = min(b.burst(), b.tokens+now.Sub(b.last).Seconds()*float64(b.rate))
		b.last = now
	}
	// Wait for a useful amount rather than dribbling single bytes.
	want := min(float64(n), b.burst())
	if b.tokens < want {
		return 0, time.Duration((want - b.tokens) / float64(b.rate) * float64(time.Second))
	}
	k := min(n, int(b.tokens))
	b.tokens -= float64(k)
	return k, 0
}
