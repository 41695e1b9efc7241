package main

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// cell is one tool on one workload.
type cell struct {
	Samples []sample
	Err     error
}

func (c *cell) ok() bool { return c.Err == nil && len(c.Samples) > 0 }

func (c *cell) median(f func(sample) time.Duration) time.Duration {
	var ds []time.Duration
	for _, s := range c.Samples {
		ds = append(ds, f(s))
	}
	return median(ds)
}

func (c *cell) pickup() time.Duration {
	return c.median(func(s sample) time.Duration { return s.Pickup })
}
func (c *cell) dropoff() time.Duration {
	return c.median(func(s sample) time.Duration { return s.Dropoff })
}
func (c *cell) total() time.Duration { return c.median(sample.Total) }
func (c *cell) cpu() time.Duration   { return c.median(func(s sample) time.Duration { return s.CPU }) }
func (c *cell) prep() time.Duration  { return c.median(func(s sample) time.Duration { return s.Prep }) }
func (c *cell) localCPU() time.Duration {
	return c.median(func(s sample) time.Duration { return s.LocalCPU })
}

// cpuPerGiB is the carrier side's median CPU seconds per GiB moved (each
// byte is moved twice: pickup and dropoff, both on the carrier).
func (c *cell) cpuPerGiB(w *workload) float64 {
	return c.localCPU().Seconds() / (float64(w.Bytes()) / float64(gib))
}

// shellStarts is the median number of host shell starts per run.
func (c *cell) shellStarts() int {
	var ds []time.Duration
	for _, s := range c.Samples {
		ds = append(ds, time.Duration(s.ShellStarts))
	}
	return int(median(ds))
}

func (c *cell) peakRSS() (pick, drop int64) {
	for _, s := range c.Samples {
		pick, drop = max(pick, s.RSSPickup), max(drop, s.RSSDropoff)
	}
	return
}

// result is every tool on one workload.
type result struct {
	W     *workload
	Order []string
	Cells map[string]*cell
	NA    map[string]string // tools not run on this profile, and why
	Err   error
}

// fastestPeer is the peer with the lowest median total.
func (r *result) fastestPeer(among func(string) bool) (string, time.Duration) {
	best, bt := "", time.Duration(0)
	for _, t := range r.Order {
		c := r.Cells[t]
		if !peers[t] || !c.ok() || (among != nil && !among(t)) {
			continue
		}
		if best == "" || c.total() < bt {
			best, bt = t, c.total()
		}
	}
	return best, bt
}

type ttfbResult struct {
	Link    string
	Profile string
	Messor  []time.Duration
	SSHTrue []time.Duration
	Err     error
}

type rssResult struct {
	Files int
	S     sample
	Err   error
}

// report is a run's outcome.
type report struct {
	Opts    options
	Machine []string
	Account string
	Ciphers []string
	NNCP    string
	Results []*result
	TTFB    []ttfbResult
	RSS100k *rssResult
}

// Failed reports whether any tool failed or data did not arrive intact.
func (rep *report) Failed() bool { return len(rep.Errors()) > 0 }

// Errors lists every failure.
func (rep *report) Errors() []string {
	var out []string
	for _, r := range rep.Results {
		if r.Err != nil {
			out = append(out, fmt.Sprintf("%s/%s: %v", r.W.Key, r.W.Link, r.Err))
		}
		for _, t := range r.Order {
			if c := r.Cells[t]; c.Err != nil {
				out = append(out, fmt.Sprintf("%s (%s, %s): %s: %v", r.W.Key, r.W.Link, r.W.profile(), t, c.Err))
			} else if len(c.Samples) == 0 {
				out = append(out, fmt.Sprintf("%s (%s, %s): %s: no samples", r.W.Key, r.W.Link, r.W.profile(), t))
			}
		}
	}
	for _, t := range rep.TTFB {
		if t.Err != nil {
			out = append(out, fmt.Sprintf("ttfb %s %s: %v", t.Profile, t.Link, t.Err))
		}
	}
	if rep.RSS100k != nil && rep.RSS100k.Err != nil {
		out = append(out, fmt.Sprintf("rss: %v", rep.RSS100k.Err))
	}
	return out
}

// find is the result for workload key on profile.
func (rep *report) find(key, profile string) *result {
	for _, r := range rep.Results {
		if r.W.Key == key && r.W.profile() == profile {
			return r
		}
	}
	return nil
}

// Markdown renders the report.
func (rep *report) Markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Results\n\n")
	mode := fmt.Sprintf("scale %g, median of %d run(s)", rep.Opts.Scale, rep.Opts.Runs)
	if rep.Opts.Smoke {
		mode = "SMOKE (tiny sizes, 1 run: not a measurement)"
	}
	p("Run: `go run ./bench` (%s), %s.\n\n", mode, time.Now().UTC().Format("2006-01-02"))
	p("Machine:\n\n")
	for _, m := range rep.Machine {
		p("- %s\n", m)
	}
	if rep.NNCP != "" {
		p("- nncp: %s\n", rep.NNCP)
	}
	p("- hosts log in as %s\n", rep.Account)
	for _, c := range rep.Ciphers {
		p("- %s\n", c)
	}
	p("\nTimes in seconds. Pickup = host A -> carrier, dropoff = carrier -> host B; MB/s = workload bytes / total time")
	p(" (10^6 bytes); \"x peer\" = this tool's total / the fastest peer's (scp, sftp, rsync, nncp) total; RSS = peak")
	p(" resident set of the local messor process (pickup / dropoff); CPU = the whole machine's busy CPU seconds over")
	p(" pickup and dropoff (every process: the tool, sshd, sftp-server, hashing on the host; from /proc/stat, so other")
	p(" load on the machine shows too): near 2x the total time means both cores were busy; CPU s/GiB = the carrier")
	p(" side's own CPU (user + system of the tool and its children, e.g. scp's ssh, from wait4: a phone's battery)")
	p(" per GiB of the workload, pickup and dropoff together; shell starts = sessions the host's login shell started")
	p(" for, per run (heavy-shell only: every exec and every SFTP session; quick and no-exec run the same exec")
	p(" commands, no-exec refuses them). Profiles: quick = /bin/sh user, heavy-shell = a login shell whose start-up")
	p(" sleeps 0.5 s (sftp-server run through it, as stock sshd does), no-exec = a key restricted to internal-sftp.\n\n")
	p("| profile | link | workload | files | bytes | tool | pickup | dropoff | total | MB/s | x peer | CPU s | CPU s/GiB | shell starts | RSS MiB |\n")
	p("|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		_, bt := r.fastestPeer(nil)
		prof := r.W.profile()
		if r.Err != nil {
			p("| %s | %s | %s | %d | %s | - | error: %s |||||||||\n", prof, r.W.Link, r.W.Title, r.W.Count(), fmtBytes(r.W.Bytes()), oneLine(r.Err))
			continue
		}
		for _, t := range r.Order {
			c := r.Cells[t]
			name := t
			if t == "nncp" {
				name = "nncp (xfer -tx / xfer -rx + toss)"
			}
			if !c.ok() {
				p("| %s | %s | %s | %d | %s | %s | FAILED: %s |||||||||\n", prof, r.W.Link, r.W.Title, r.W.Count(), fmtBytes(r.W.Bytes()), name, oneLine(c.Err))
				continue
			}
			ratio := "-"
			if bt > 0 {
				ratio = fmt.Sprintf("%.2f", c.total().Seconds()/bt.Seconds())
			}
			rss := ""
			if t == "messor" {
				pk, dr := c.peakRSS()
				rss = fmt.Sprintf("%d / %d", pk>>10, dr>>10)
			}
			starts := "-"
			if prof == profHeavy && t != "nncp" {
				starts = fmt.Sprint(c.shellStarts())
			}
			p("| %s | %s | %s | %d | %s | %s | %.2f | %.2f | %.2f | %.1f | %s | %.2f | %.2f | %s | %s |\n", prof, r.W.Link, r.W.Title, r.W.Count(), fmtBytes(r.W.Bytes()),
				name, c.pickup().Seconds(), c.dropoff().Seconds(), c.total().Seconds(),
				float64(r.W.Bytes())/1e6/c.total().Seconds(), ratio, c.cpu().Seconds(), c.cpuPerGiB(r.W), starts, rss)
			if t == "nncp" {
				p("| %s | %s | %s | | | nncp-file (packing into the spool, on host A) | %.2f | | %.2f | | | | | | |\n", prof, r.W.Link, r.W.Title, c.prep().Seconds(), c.prep().Seconds()+c.total().Seconds())
			}
		}
		for _, t := range slices.Sorted(maps.Keys(r.NA)) {
			p("| %s | %s | %s | | | %s | %s |||||||||\n", prof, r.W.Link, r.W.Title, t, r.NA[t])
		}
		if r.W.Skip != "" {
			p("| %s | %s | %s | | | (%s) |||||||||\n", prof, r.W.Link, r.W.Title, r.W.Skip)
		}
	}
	if len(rep.TTFB) > 0 {
		p("\nTime to first byte (messor pickup started with a hosts-file host that is reachable, until the first data byte is in the buffer; `ssh host true` = connect, key exchange, login and one exec):\n\n")
		p("| profile | link | messor first byte | ssh host true |\n|---|---|---:|---:|\n")
		for _, t := range rep.TTFB {
			if t.Err != nil {
				p("| %s | %s | error: %s | |\n", t.Profile, t.Link, oneLine(t.Err))
				continue
			}
			sshTrue := "n/a (no exec)"
			if len(t.SSHTrue) > 0 {
				sshTrue = fmt.Sprintf("%.0f ms", ms(median(t.SSHTrue)))
			}
			p("| %s | %s | %.0f ms | %s |\n", t.Profile, t.Link, ms(median(t.Messor)), sshTrue)
		}
	}
	if r := rep.RSS100k; r != nil {
		p("\nOutbox of %d small files (512 B), messor, one run: ", r.Files)
		if r.Err != nil {
			p("error: %s\n", oneLine(r.Err))
		} else {
			p("pickup %.1f s, peak RSS %d MiB; dropoff %.1f s, peak RSS %d MiB.\n", r.S.Pickup.Seconds(), r.S.RSSPickup>>10, r.S.Dropoff.Seconds(), r.S.RSSDropoff>>10)
		}
	}
	p("\n### Targets\n\n")
	for _, t := range rep.targets() {
		p("- %s\n", t)
	}
	if errs := rep.Errors(); len(errs) > 0 {
		p("\n### Failures\n\n")
		for _, e := range errs {
			p("- %s\n", oneLine(fmt.Errorf("%s", e)))
		}
	}
	return b.String()
}

// targets checks issue 11's targets against this run, on each profile
// (reported, never asserted).
func (rep *report) targets() []string {
	var out []string
	verdict := func(ok bool) string {
		if ok {
			return "MET"
		}
		return "MISSED"
	}
	okCell := func(r *result, tool string) *cell {
		if r == nil || r.Cells[tool] == nil || !r.Cells[tool].ok() {
			return nil
		}
		return r.Cells[tool]
	}
	profiles := []string{}
	for _, r := range rep.Results {
		if !slices.Contains(profiles, r.W.profile()) {
			profiles = append(profiles, r.W.profile())
		}
	}
	// vs compares messor's f with peer's f on key.
	vs := func(prof, key, peer, what string, limit float64, f func(*cell) float64) {
		r := rep.find(key, prof)
		m, pc := okCell(r, "messor"), okCell(r, peer)
		switch {
		case r == nil, pc == nil && r.Cells[peer] == nil && r.NA[peer] == "":
			// workload or peer not selected in this run
		case m == nil:
			out = append(out, prof+": "+what+": not measured")
		case pc == nil && r.NA[peer] != "":
			out = append(out, fmt.Sprintf("%s: %s: %s not run (%s)", prof, what, peer, r.NA[peer]))
		case pc == nil:
			out = append(out, fmt.Sprintf("%s: %s: %s not measured", prof, what, peer))
		default:
			mv, pv := f(m), f(pc)
			ratio := mv / pv
			out = append(out, fmt.Sprintf("%s: %s: messor %.2f vs %s %.2f = %.2fx (target <= %.2fx): %s",
				prof, what, mv, peer, pv, ratio, limit, verdict(ratio <= limit)))
		}
	}
	secs := func(f func(*cell) time.Duration) func(*cell) float64 {
		return func(c *cell) float64 { return f(c).Seconds() }
	}
	for _, prof := range profiles {
		vs(prof, "e2e", "scp", "end to end one file, s, vs scp twice (pickup + dropoff)", 1.0, secs((*cell).total))
		vs(prof, "big", "scp", "1 GiB file pickup, s", 0.9, secs((*cell).pickup))
		vs(prof, "big", "scp", "1 GiB file dropoff, s", 0.9, secs((*cell).dropoff))
		vs(prof, "small", "rsync", "5,000 small files, loopback, s", 1.0, secs((*cell).total))
		if r := rep.find("big", prof); r != nil {
			vs(prof, "big", "scp", "carrier CPU s per GiB, 1 GiB file", 1.2, func(c *cell) float64 { return c.cpuPerGiB(r.W) })
		}
	}
	quick := profiles
	if len(quick) > 0 {
		quick = quick[:1]
	}
	for _, prof := range quick {
		vs(prof, "e2e", "nncp", "end to end one file vs NNCP xfer + toss", 1.0, secs((*cell).total))
		vs(prof, "wifi-small", "rsync", "5,000 small files, Wi-Fi", 0.8, secs((*cell).total))
		if r := rep.find("wifi-photos", prof); okCell(r, "messor") != nil {
			m := okCell(r, "messor")
			link := float64(wifiRate)
			pu := float64(r.W.Bytes()) / m.pickup().Seconds() / link
			do := float64(r.W.Bytes()) / m.dropoff().Seconds() / link
			out = append(out, fmt.Sprintf("%s: photo card on Wi-Fi at >= 90%% of the 25 MB/s link: pickup %.0f%%, dropoff %.0f%%: %s",
				prof, pu*100, do*100, verdict(pu >= 0.9 && do >= 0.9)))
		}
		if m := okCell(rep.find("big", prof), "messor"); m != nil {
			pk, dr := m.peakRSS()
			peak := max(pk, dr) >> 10
			out = append(out, fmt.Sprintf("%s: peak carrier RSS, 1 GiB file: %d MiB (target < 64 MiB): %s", prof, peak, verdict(peak < 64)))
		}
	}
	if r := rep.RSS100k; r != nil && r.Err == nil {
		peak := max(r.S.RSSPickup, r.S.RSSDropoff) >> 10
		out = append(out, fmt.Sprintf("peak carrier RSS, %d files: %d MiB (target < 256 MiB): %s", r.Files, peak, verdict(peak < 256)))
	}
	if rep.Opts.Smoke || rep.Opts.Scale != 1 {
		out = append(out, "(sizes are not the targets' sizes in this run: verdicts are indicative only)")
	}
	return out
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	s := firstLine(err.Error())
	s = strings.ReplaceAll(s, "|", "/")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func fmtBytes(n int64) string {
	switch {
	case n >= gib && n%gib == 0:
		return fmt.Sprintf("%d GiB", n/gib)
	case n >= gib:
		return fmt.Sprintf("%.2f GiB", float64(n)/float64(gib))
	case n >= mib:
		return fmt.Sprintf("%.0f MiB", float64(n)/float64(mib))
	case n >= kib:
		return fmt.Sprintf("%.0f KiB", float64(n)/float64(kib))
	}
	return fmt.Sprintf("%d B", n)
}

// machineInfo describes the machine and the tools' versions.
func machineInfo() []string {
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "not available"
		}
		return strings.TrimSpace(firstLine(string(out)))
	}
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if i := strings.IndexByte(l, ':'); i >= 0 {
					model = strings.TrimSpace(l[i+1:])
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(firstLine(string(b)))[1:], " ")
	}
	return []string{
		fmt.Sprintf("CPU: %s, nproc %d, MemTotal %s, kernel %s", model, runtime.NumCPU(), mem, first("uname", "-r")),
		"OpenSSH: " + first("ssh", "-V"),
		"rsync: " + first("rsync", "--version"),
		"Go: " + runtime.Version(),
	}
}
