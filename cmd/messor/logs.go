package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// humanLog is the log handler without -v: warnings and errors only, as
// "messor: warning: MSG key=value ...", each distinct line once per
// process (watch lists the same symlink every round), and nothing about
// an interruption (run says it once).
type humanLog struct {
	out    *humanOut
	attrs  []slog.Attr
	prefix string // of keys, from WithGroup
}

// humanOut is what the handlers derived from one humanLog share.
type humanOut struct {
	mu   sync.Mutex
	w    io.Writer
	seen map[string]bool
}

// maxSeen bounds the lines remembered; past it they are forgotten (and
// may be printed again) rather than growing without end.
const maxSeen = 100_000

func newHumanLog(w io.Writer) *humanLog {
	return &humanLog{out: &humanOut{w: w, seen: map[string]bool{}}}
}

func (h *humanLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *humanLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString("messor: ")
	if r.Level >= slog.LevelError {
		b.WriteString("error: ")
	} else {
		b.WriteString("warning: ")
	}
	b.WriteString(r.Message)
	cancelled := false
	write := func(a slog.Attr) bool {
		v := a.Value.Resolve()
		if err, ok := v.Any().(error); ok && errors.Is(err, context.Canceled) {
			cancelled = true
		}
		s := v.String()
		if strings.ContainsAny(s, " \t\n\"=") {
			s = fmt.Sprintf("%q", s)
		}
		fmt.Fprintf(&b, " %s=%s", a.Key, s)
		return true
	}
	for _, a := range h.attrs {
		write(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		a.Key = h.prefix + a.Key
		return write(a)
	})
	if cancelled {
		return nil
	}
	line := b.String()
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	if h.out.seen[line] {
		return nil
	}
	if len(h.out.seen) >= maxSeen {
		clear(h.out.seen)
	}
	h.out.seen[line] = true
	_, err := io.WriteString(h.out.w, line+"\n")
	return err
}

func (h *humanLog) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		a.Key = h.prefix + a.Key
		n.attrs = append(n.attrs, a)
	}
	return &n
}

func (h *humanLog) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	n := *h
	n.prefix = h.prefix + name + "."
	return &n
}
