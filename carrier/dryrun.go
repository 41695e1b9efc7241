package carrier

import (
	"context"
	"fmt"

	"github.com/messor-sync/messor/carrier/buffer"
	"github.com/messor-sync/messor/discovery"
)

// pickupPlan connects to h and says what a pickup would carry (Files,
// Bytes), what is carried already, and what would wait and why, without
// moving, removing or dropping anything.
func (c *Carrier) pickupPlan(ctx context.Context, h discovery.Host) *HostReport {
	r := &HostReport{Host: h.Name, Verb: "pickup", DryRun: true}
	s, err := c.dial(ctx, h)
	if err != nil {
		r.Err = err
		return r
	}
	defer s.Close()
	notes := newNoteSet(r)
	defer notes.bound(true)
	l, err := c.listOutbox(ctx, s, notes)
	if err != nil {
		r.Err = err
		return r
	}
	r.NoOutbox = l.noOutbox
	l.markKeep()
	cands := c.unleased(ctx, s, l, notes)
	origins := make([]buffer.Origin, len(cands))
	for i, cd := range cands {
		origins[i] = cd.origin(s.Host.Name)
	}
	carried, err := c.buf.Carried(origins)
	if err != nil {
		r.Err = fmt.Errorf("host %s: %w", s.Host.Name, err)
		return r
	}
	var fresh []candidate
	for i, cd := range cands {
		if carried[i] {
			r.Already++
		} else {
			fresh = append(fresh, cd)
		}
	}
	take, wait := plan(fresh, c.buf.Limit()-c.buf.Used(), c.buf.partialsOf(s.Host.Name))
	for _, t := range take {
		r.Files++
		r.Bytes += t.Size
	}
	for _, w := range wait {
		r.Waiting = append(r.Waiting, c.waitNote(w))
	}
	if err := c.sessionErr(ctx, s, "pickup"); err != nil {
		r.Err = err
	}
	return r
}

// dropoffPlan connects to h (so that an unreachable or refusing host says
// so) and says what a dropoff would deliver, without delivering.
func (c *Carrier) dropoffPlan(ctx context.Context, h discovery.Host, mine []Entry) *HostReport {
	r := &HostReport{Host: h.Name, Verb: "dropoff", DryRun: true}
	s, err := c.dial(ctx, h)
	if err != nil {
		r.Err = err
		return r
	}
	s.Close()
	for _, e := range mine {
		r.Files++
		r.Bytes += e.Size
	}
	return r
}
