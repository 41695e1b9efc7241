package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"github.com/messor-sync/messor/carrier"
	"github.com/messor-sync/messor/discovery"
)

// profile runs the carrier in this process, as cmd/messor wires it, on the
// workloads that matter for the targets, with a CPU profile per verb:
// DIR/<workload>-<verb>.pprof. Read them with
// `go tool pprof -top DIR/big-pickup.pprof`. The in-process proxy of the
// Wi-Fi link shows in those profiles too (internal/flaky).
func (r *runner) profile(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, w := range r.workloads() {
		if w.Key != "big" && w.Key != "small" && w.Key != "wifi-small" {
			continue
		}
		if err := r.prepare(w); err != nil {
			return err
		}
		p, err := r.reset(w, "messor")
		if err != nil {
			return err
		}
		home := r.home(w)
		cfg, err := discovery.LoadSSHConfig(home.Dir)
		if err != nil {
			return err
		}
		resolve := func(name string) (discovery.Host, error) { return cfg.Resolve(name) }
		hostA, err := resolve("hosta")
		if err != nil {
			return err
		}
		buf, err := carrier.OpenBuffer(filepath.Join(p.local, "buffer"), 1<<40)
		if err != nil {
			return err
		}
		c := carrier.New(buf, carrier.Options{Settle: -1, VerifySource: true})
		var perr error
		prof := func(verb string, f func() error) {
			if perr != nil {
				return
			}
			out, err := os.Create(filepath.Join(dir, w.Key+"-"+verb+".pprof"))
			if err != nil {
				perr = err
				return
			}
			defer out.Close()
			if err := pprof.StartCPUProfile(out); err != nil {
				perr = err
				return
			}
			start := time.Now()
			perr = f()
			pprof.StopCPUProfile()
			r.say("profile %s %s: %.2fs -> %s", w.Key, verb, time.Since(start).Seconds(), out.Name())
		}
		prof("pickup", func() error {
			for _, rep := range c.Pickup(ctx, []discovery.Host{hostA}) {
				if rep.Failure() || rep.Err != nil {
					return fmt.Errorf("profile pickup: %s", rep.Summary())
				}
			}
			return nil
		})
		prof("dropoff", func() error {
			dests, err := c.Destinations()
			if err != nil {
				return err
			}
			var hosts []discovery.Host
			for _, d := range dests {
				h, err := resolve(d)
				if err != nil {
					return err
				}
				hosts = append(hosts, h)
			}
			reps, err := c.Dropoff(ctx, hosts)
			if err != nil {
				return err
			}
			for _, rep := range reps {
				if rep.Failure() || rep.Err != nil {
					return fmt.Errorf("profile dropoff: %s", rep.Summary())
				}
			}
			return nil
		})
		buf.Close()
		if perr == nil {
			perr = r.verify(w, p.dest)
		}
		os.RemoveAll(p.local)
		os.RemoveAll(p.dest)
		os.RemoveAll(r.seedDir(w))
		if perr != nil {
			return perr
		}
	}
	return nil
}
