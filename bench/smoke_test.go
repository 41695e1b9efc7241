package main

import (
	"context"
	"strings"
	"testing"
)

// TestSmoke runs the whole benchmark at tiny sizes, once, so the suite never
// rots: every tool must succeed and every byte must arrive intact. No
// timing is asserted. It needs OpenSSH's sshd, ssh, scp, sftp and rsync, and
// root (to create the bench user); nncp is used when installed (.ci/run
// installs it) and its absence is reported, not fatal.
func TestSmoke(t *testing.T) {
	var progress strings.Builder
	rep, err := run(context.Background(), options{
		Scale: 1, Smoke: true, Runs: 1, Profiles: profQuick,
		Tools:  strings.Join(transferTools, ","),
		Cipher: "auto",
		Log:    &progress,
	})
	if testing.Verbose() || err != nil || (rep != nil && rep.Failed()) {
		t.Logf("progress:\n%s", progress.String())
	}
	if err != nil {
		t.Fatal(err) // sshd missing, a tool missing, setup failed: never a skip
	}
	if errs := rep.Errors(); len(errs) > 0 {
		t.Fatalf("bench smoke run failed:\n%s\n\nreport:\n%s", strings.Join(errs, "\n"), rep.Markdown())
	}
	// Every workload ran every tool it lists, and each verified.
	want := map[string]bool{}
	for _, r := range rep.Results {
		want[r.W.Key] = true
		for _, tool := range r.Order {
			if c := r.Cells[tool]; !c.ok() {
				t.Errorf("%s: %s: no successful run", r.W.Key, tool)
			}
		}
		if r.Cells["messor"] == nil {
			t.Errorf("%s: messor did not run", r.W.Key)
		}
	}
	for _, k := range []string{"big", "small", "photos", "dedup", "e2e", "wifi-big", "wifi-small", "wifi-photos"} {
		if !want[k] {
			t.Errorf("workload %s missing from the report", k)
		}
	}
	if len(rep.TTFB) != 2 {
		t.Errorf("time to first byte: %d links measured, want 2", len(rep.TTFB))
	}
	if rep.RSS100k == nil || rep.RSS100k.S.RSSPickup == 0 {
		t.Errorf("peak RSS of the many-files run not measured")
	}
	if e2e := rep.find("e2e", profQuick); e2e != nil && e2e.Cells["nncp"] == nil {
		t.Logf("nncp did not run: %s", rep.NNCP)
	}
}

// TestSmokeProfiles runs the small-file workload, tiny, on the heavy-shell
// and no-exec profiles: every tool that can run there must deliver intact,
// rsync must be reported n/a on no-exec, and the heavy shell must have
// started for every tool's sessions. No timing is asserted.
func TestSmokeProfiles(t *testing.T) {
	var progress strings.Builder
	rep, err := run(context.Background(), options{
		Scale: 1, Smoke: true, Runs: 1, Only: "small",
		Profiles: profHeavy + "," + profNoExec,
		Tools:    "messor,scp,sftp,rsync",
		Cipher:   "auto",
		Log:      &progress,
	})
	if testing.Verbose() || err != nil || (rep != nil && rep.Failed()) {
		t.Logf("progress:\n%s", progress.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	if errs := rep.Errors(); len(errs) > 0 {
		t.Fatalf("bench profiles run failed:\n%s\n\nreport:\n%s", strings.Join(errs, "\n"), rep.Markdown())
	}
	heavy, noExec := rep.find("small", profHeavy), rep.find("small", profNoExec)
	if heavy == nil || noExec == nil {
		t.Fatalf("small: a profile is missing from the report:\n%s", rep.Markdown())
	}
	for _, tool := range []string{"messor", "scp", "sftp", "rsync"} {
		c := heavy.Cells[tool]
		if !c.ok() {
			t.Errorf("heavy-shell: %s: no successful run", tool)
		} else if c.Samples[0].ShellStarts < 1 {
			t.Errorf("heavy-shell: %s: the login shell never started", tool)
		}
	}
	for _, tool := range []string{"messor", "scp", "sftp"} {
		if !noExec.Cells[tool].ok() {
			t.Errorf("no-exec: %s: no successful run", tool)
		}
	}
	if noExec.Cells["rsync"] != nil || noExec.NA["rsync"] == "" {
		t.Errorf("no-exec: rsync should be reported n/a, got cell %v, NA %q", noExec.Cells["rsync"], noExec.NA["rsync"])
	}
}
