package carrier

import (
	"context"
	"maps"
	"slices"
)

// Sync delivers what the buffer holds (DropoffTo), picks up (pickup), and
// then delivers what the pickups brought to the destinations that did not
// fail in this run: a file whose source and destination are both in range
// crosses in one run. A destination found out of range (or refused) by
// either verb is not dialed again; one never met in this run is dialed
// once. The reports hold one per host and verb: the second delivery is
// added to the first's report. With Options.DryRun nothing is picked up,
// so there is no second delivery. names limits both verbs as in DropoffTo
// and PickupFrom.
func (c *Carrier) Sync(ctx context.Context, f Finder, names []string, pickup func() []*HostReport) ([]*HostReport, error) {
	before, err := c.entriesByDest()
	if err != nil {
		return nil, err
	}
	reports := c.dropoffTo(ctx, f, names, before)
	if ctx.Err() != nil {
		return reports, nil
	}
	reports = append(reports, pickup()...)
	if c.opts.DryRun || ctx.Err() != nil {
		return reports, nil
	}
	fresh, err := c.newEntries(before)
	if err != nil {
		return reports, err
	}
	for dest := range fresh {
		if (len(names) > 0 && !slices.Contains(names, dest)) || failedIn(reports, dest) {
			delete(fresh, dest)
		}
	}
	if len(fresh) == 0 {
		return reports, nil
	}
	second := c.dropoffTo(ctx, f, slices.Sorted(maps.Keys(fresh)), fresh)
	return mergeDropoffs(reports, second), nil
}

// newEntries is what the buffer holds now and did not in before, by
// destination.
func (c *Carrier) newEntries(before map[string][]Entry) (map[string][]Entry, error) {
	had := map[string]bool{}
	for _, es := range before {
		for _, e := range es {
			had[string(e.Key())] = true
		}
	}
	now, err := c.entriesByDest()
	if err != nil {
		return nil, err
	}
	fresh := map[string][]Entry{}
	for dest, es := range now {
		for _, e := range es {
			if !had[string(e.Key())] {
				fresh[dest] = append(fresh[dest], e)
			}
		}
	}
	return fresh, nil
}

// failedIn reports whether a report of rs found host out of range or
// refused it.
func failedIn(rs []*HostReport, host string) bool {
	return slices.ContainsFunc(rs, func(r *HostReport) bool { return r.Host == host && r.Err != nil })
}

// mergeDropoffs adds each of second's reports to rs's dropoff report for
// the same host, or appends it when rs has none (or only "nothing carried").
func mergeDropoffs(rs, second []*HostReport) []*HostReport {
	for _, s := range second {
		i := slices.IndexFunc(rs, func(r *HostReport) bool { return r.Host == s.Host && r.Verb == "dropoff" })
		if i < 0 {
			rs = append(rs, s)
			continue
		}
		if rs[i].NothingCarried {
			rs[i] = s
			continue
		}
		r := rs[i]
		r.Files += s.Files
		r.Bytes += s.Bytes
		r.Resumed += s.Resumed
		r.Already += s.Already
		r.Dedup += s.Dedup
		r.Receipts += s.Receipts
		r.Collected += s.Collected
		r.Kept += s.Kept
		r.Released += s.Released
		r.Waiting = append(r.Waiting, s.Waiting...)
		r.Skipped = append(r.Skipped, s.Skipped...)
		r.Failed = append(r.Failed, s.Failed...)
		r.Elapsed += s.Elapsed
		r.Interrupted = r.Interrupted || s.Interrupted
		if r.Err == nil {
			r.Err = s.Err
		}
	}
	return rs
}
