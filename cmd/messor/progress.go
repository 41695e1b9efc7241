package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"

	"github.com/messor-sync/messor/carrier"
)

// barProgress draws a progress bar per host transfer on a terminal: files
// done of all, bytes moved now of those to move now (resumed bytes are
// shown apart, so that the rate and ETA are the link's), and "verifying on
// host" once every byte is sent and files are still being checked.
type barProgress struct {
	w  io.Writer
	mu sync.Mutex
}

func (p *barProgress) Start(host, verb string, files int, bytes int64) carrier.Tracker {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := &barTracker{host: host, verb: verb, files: files, total: bytes}
	t.desc = t.describe()
	t.bar = progressbar.NewOptions64(bytes,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(t.desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true), // MiB, as FormatSize in the summaries
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(true),
	)
	return t
}

type barTracker struct {
	mu                    sync.Mutex
	bar                   *progressbar.ProgressBar
	host, verb, desc      string
	files, done           int
	total, moved, resumed int64
}

// describe is the bar's description for the counts now.
func (t *barTracker) describe() string {
	d := fmt.Sprintf("%s %s %d/%d files", t.verb, t.host, t.done, t.files)
	if t.resumed > 0 {
		d += ", " + carrier.FormatSize(t.resumed) + " resumed"
	}
	if t.moved+t.resumed >= t.total && t.done < t.files {
		d += ", verifying on host"
	}
	return d
}

// redescribe updates the description if it changed; t.mu is held.
func (t *barTracker) redescribe() {
	if d := t.describe(); d != t.desc {
		t.desc = d
		t.bar.Describe(d)
	}
}

func (t *barTracker) Add(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.moved += n
	t.bar.Add64(n)
	t.redescribe()
}

func (t *barTracker) Resumed(n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.resumed += n
	t.redescribe()
	t.bar.ChangeMax64(max(t.total-t.resumed, 0)) // draws the bar, described
}

func (t *barTracker) FileDone() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done++
	t.redescribe()
}

func (t *barTracker) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bar.Finish()
}
