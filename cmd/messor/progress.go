package main

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"

	"github.com/messor-sync/messor/carrier"
)

// barProgress draws a progress bar (bytes, rate, ETA) per host transfer on
// a terminal.
type barProgress struct {
	w  io.Writer
	mu sync.Mutex
}

func (p *barProgress) Start(host, verb string, files int, bytes int64) carrier.Tracker {
	p.mu.Lock()
	defer p.mu.Unlock()
	bar := progressbar.NewOptions64(bytes,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%s %s (%d files)", verb, host, files)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true), // MiB, as FormatSize in the summaries
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetPredictTime(true),
	)
	return &barTracker{bar: bar}
}

type barTracker struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

func (t *barTracker) Add(n int64) {
	t.mu.Lock()
	t.bar.Add64(n)
	t.mu.Unlock()
}

func (t *barTracker) Done() {
	t.mu.Lock()
	t.bar.Finish()
	t.mu.Unlock()
}
