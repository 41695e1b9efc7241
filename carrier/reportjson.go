package carrier

import (
	"errors"
)

// ReportSchema is the version of RunReport; it changes only when a field
// changes meaning or goes away (docs/json.md).
const ReportSchema = 1

// RunReport is `messor pickup|dropoff|sync --json`: one object per host
// visited, in the order visited (sync: dropoffs, then pickups).
type RunReport struct {
	Schema  int          `json:"schema"`
	Command string       `json:"command"`
	DryRun  bool         `json:"dry_run"`
	Hosts   []HostResult `json:"hosts"`
}

// HostResult is one host's part of a RunReport.
type HostResult struct {
	Host string `json:"host"`
	Verb string `json:"verb"` // "pickup" or "dropoff"
	// Outcome: "done" (Failed may still list files), "unreachable" (out
	// of range, not a failure), "no_such_host" (the name resolves
	// nowhere: a configuration error), "interrupted" (the run was), "held"
	// (not visited over a remote address or a metered link), "error"
	// (refused, stalled...). Reason says why for all but "done".
	Outcome string `json:"outcome"`
	Reason  string `json:"reason,omitempty"`
	Files   int    `json:"files"` // moved, or would move with dry_run
	Bytes   int64  `json:"bytes"`
	Already int    `json:"already"`
	Dedup   int    `json:"dedup"`
	// Receipts, Collected, Kept, Released: see HostReport.
	Receipts  int        `json:"receipts,omitempty"`
	Collected int        `json:"receipts_collected,omitempty"`
	Kept      int        `json:"kept,omitempty"`
	Released  int        `json:"released,omitempty"`
	ElapsedMS int64      `json:"elapsed_ms"`
	Waiting   []FileNote `json:"waiting"`
	Skipped   []FileNote `json:"skipped"`
	Failed    []FileNote `json:"failed"`
}

// NewRunReport gathers reports into a RunReport for command.
func NewRunReport(command string, dryRun bool, reports []*HostReport) *RunReport {
	out := &RunReport{Schema: ReportSchema, Command: command, DryRun: dryRun, Hosts: []HostResult{}}
	for _, r := range reports {
		out.Hosts = append(out.Hosts, r.Result())
	}
	return out
}

// Result is r for RunReport.
func (r *HostReport) Result() HostResult {
	hr := HostResult{
		Host: r.Host, Verb: r.Verb, Outcome: "done",
		Files: r.Files, Bytes: r.Bytes, Already: r.Already, Dedup: r.Dedup,
		Receipts: r.Receipts, Collected: r.Collected, Kept: r.Kept, Released: r.Released,
		ElapsedMS: r.Elapsed.Milliseconds(),
		Waiting:   notes(r.Waiting), Skipped: notes(r.Skipped), Failed: notes(r.Failed),
	}
	var ue *UnreachableError
	switch {
	case r.Interrupted:
		hr.Outcome, hr.Reason = "interrupted", "the run was interrupted; the rest resumes next time"
	case r.NoSuchHost():
		hr.Outcome, hr.Reason = "no_such_host", "no such host"
	case errors.As(r.Err, &ue):
		hr.Outcome, hr.Reason = "unreachable", ue.Why()
	case r.Held():
		hr.Outcome, hr.Reason = "held", r.held().Error()
	case r.Err != nil:
		hr.Outcome, hr.Reason = "error", r.Err.Error()
	}
	return hr
}

// notes is ns, never nil (JSON [] rather than null).
func notes(ns []FileNote) []FileNote {
	if ns == nil {
		return []FileNote{}
	}
	return ns
}
