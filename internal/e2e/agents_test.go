package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/messor-sync/messor/internal/netns"
)

// TestAgentsOverMDNS is agent mode and mDNS discovery end to end, with the
// real binary in four network namespaces on one bridge:
//
//	node 0: agent "alpha"        node 1: agent "beta"
//	node 2: the carrier          node 3: an impostor agent also named "alpha"
//
// The carrier has no hosts-file entries and no ~/.ssh/config: everything it
// knows about the agents it hears over mDNS, and it trusts only the keys it
// was told to pin with `messor trust NAME --fingerprint FP`.
func TestAgentsOverMDNS(t *testing.T) {
	requireRootAndIP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()

	nt := netns.New(t, 4)
	base := t.TempDir()
	home := func(name string) string { return filepath.Join(base, name) }

	// The carrier: an ed25519 key, an empty hosts file, no ssh config.
	c := &carrierEnv{ctx: ctx, nt: nt, node: 2, home: home("carrier"), hosts: filepath.Join(base, "carrier-hosts")}
	authorized := newCarrierKey(t, c.home)
	writeFile(t, c.hosts, nil, 0o644)
	knownAgents := filepath.Join(c.home, ".config", "messor", "known_agents")

	// The agents' homes, each authorizing the carrier's key.
	for _, h := range []string{"alpha", "beta", "impostor"} {
		writeFile(t, filepath.Join(home(h), ".ssh", "authorized_keys"), authorized, 0o600)
	}

	// Files waiting to travel, modified an hour ago (well past --settle).
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	alphaToBeta := tree{
		"report.txt":                []byte("quarterly report from alpha\n"),
		"photos/2024/beach day.jpg": randomBytes(t, 700<<10),
		"notes/empty":               {},
	}
	betaToAlpha := tree{
		"letter.md":     []byte("# dear alpha\n\nbeta here.\n"),
		"data/big.bin":  randomBytes(t, 3<<20),
		"data/deep/a/b": randomBytes(t, 4097),
	}
	impostorToBeta := tree{"invoice.pdf": []byte("pay the impostor, please\n")}
	alphaToBetaLater := tree{"second/visit.txt": []byte("alpha again, after the impostor left\n")}

	alpha := startAgent(ctx, t, nt, 0, "alpha", "alpha", home("alpha"))
	beta := startAgent(ctx, t, nt, 1, "beta", "beta", home("beta"))
	put(t, alpha.outbox("beta"), alphaToBeta, old)
	put(t, beta.outbox("alpha"), betaToAlpha, old)

	checkBoxes := func(step string, alphaOut, betaOut, alphaIn, betaIn tree) {
		t.Helper()
		wantTree(t, step+": alpha's outbox for beta", alpha.outbox("beta"), alphaOut)
		wantTree(t, step+": beta's outbox for alpha", beta.outbox("alpha"), betaOut)
		wantTree(t, step+": alpha's inbox from beta", alpha.inbox("beta"), alphaIn)
		wantTree(t, step+": beta's inbox from alpha", beta.inbox("alpha"), betaIn)
		if t.Failed() {
			t.FailNow()
		}
	}
	carried := func(step string) int {
		t.Helper()
		r := c.run(t, "status", "--json")
		wantCode(t, r, 0)
		var st struct {
			Files int `json:"files"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("%s: messor status --json: %v\n%s", step, err, r)
		}
		return st.Files
	}

	t.Log("1. agents on the LAN but none pinned: never dialled, nothing moves")
	r := c.run(t, "sync", "--mdns-timeout", "3s")
	wantCode(t, r, 0)
	wantOutput(t, r, "no pickup hosts", "messor trust NAME")
	for _, a := range []*agentProc{alpha, beta} {
		if strings.Contains(a.output(), "remote=") {
			t.Errorf("agent %s was dialled though nobody pinned it:\n%s", a.name, a.output())
		}
	}
	checkBoxes("untrusted sync", alphaToBeta, betaToAlpha, nil, nil)
	if _, err := os.Stat(knownAgents); err == nil {
		b, _ := os.ReadFile(knownAgents)
		t.Fatalf("untrusted sync pinned agent keys in %s:\n%s", knownAgents, b)
	}

	t.Log("2. trust with the wrong fingerprint is refused; with the printed one, pinned")
	wrong := "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	r = c.run(t, "trust", "alpha", "--fingerprint", wrong)
	wantCode(t, r, 1)
	wantOutput(t, r, alpha.fingerprint, "not trusted")
	if b, err := os.ReadFile(knownAgents); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		t.Fatalf("trust with a wrong fingerprint pinned a key in %s:\n%s", knownAgents, b)
	}
	for _, a := range []*agentProc{alpha, beta} {
		r = c.run(t, "trust", a.name, "--fingerprint", a.fingerprint)
		if strings.Contains(r.output(), "missing port in address") {
			// Once known_agents exists, every check against it fails: see
			// the bug named below.
			t.Fatalf("BUG in carrier.HostKeyPolicy (carrier/trust.go): an agent's known_agents entry is looked up by "+
				"its bare HostKeyAlias %q, but the knownhosts callback needs host:port, so once %s exists no agent "+
				"can be checked (pass net.JoinHostPort(alias, \"22\") to the callback):\n%s", a.name, knownAgents, r)
		}
		wantCode(t, r, 0)
		wantOutput(t, r, a.fingerprint, "trusted "+a.name)
	}
	if b, err := os.ReadFile(knownAgents); err != nil || strings.Count(string(b), "\n") != 2 {
		t.Fatalf("after trusting alpha and beta, %s should hold two lines: %v\n%s", knownAgents, err, b)
	}

	t.Log("3. pickup, then dropoff: files cross both ways, outboxes empty")
	r = c.run(t, "pickup")
	wantCode(t, r, 0)
	wantOutput(t, r, "pickup: alpha: picked up 3 file(s)", "pickup: beta: picked up 3 file(s)")
	checkBoxes("after pickup", nil, nil, nil, nil)
	if n := carried("after pickup"); n != 6 {
		t.Errorf("after pickup the buffer holds %d files, want 6", n)
	}
	r = c.run(t, "dropoff")
	wantCode(t, r, 0)
	wantOutput(t, r, "dropoff: alpha: delivered 3 file(s)", "dropoff: beta: delivered 3 file(s)")
	checkBoxes("after dropoff", nil, nil, betaToAlpha, alphaToBeta)
	if n := carried("after dropoff"); n != 0 {
		t.Errorf("after dropoff the buffer still holds %d files, want 0", n)
	}

	t.Log("4. the real alpha stops; an impostor named alpha with another key is refused loudly")
	alpha.stop(t)
	impostor := startAgent(ctx, t, nt, 3, "impostor alpha", "alpha", home("impostor"))
	if impostor.fingerprint == alpha.fingerprint {
		t.Fatalf("the impostor has alpha's host key %s: test setup is wrong", alpha.fingerprint)
	}
	put(t, impostor.outbox("beta"), impostorToBeta, old)
	r = c.run(t, "pickup")
	wantCode(t, r, 1)
	wantOutput(t, r, "host alpha", "HOST KEY CHANGED", impostor.fingerprint)
	wantTree(t, "after the impostor's pickup: the impostor's outbox", impostor.outbox("beta"), impostorToBeta)
	if n := carried("after the impostor's pickup"); n != 0 {
		t.Errorf("after the impostor's pickup the buffer holds %d files, want 0", n)
	}
	r = c.run(t, "dropoff")
	wantCode(t, r, 0)
	wantTree(t, "after the impostor's pickup and a dropoff: beta's inbox from alpha", beta.inbox("alpha"), alphaToBeta)
	wantTree(t, "after the impostor's pickup and a dropoff: the impostor's inbox", impostor.inbox("beta"), nil)

	t.Log("   trust cannot be talked into replacing the pinned key either")
	r = c.run(t, "trust", "alpha", "--yes")
	if r.code == 0 {
		t.Errorf("messor trust alpha --yes with the impostor answering: exit status 0, want a refusal:\n%s", r)
	}
	wantOutput(t, r, "HOST KEY CHANGED")
	if b, err := os.ReadFile(knownAgents); err != nil || strings.Count(string(b), "\n") != 2 {
		t.Errorf("after the impostor, %s should still hold two lines: %v\n%s", knownAgents, err, b)
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Log("5. the real alpha is back while the impostor runs: two agents, one name, neither visited")
	alpha2 := startAgent(ctx, t, nt, 0, "alpha (restarted)", "alpha", home("alpha"))
	if alpha2.fingerprint != alpha.fingerprint {
		t.Fatalf("alpha restarted with host key %s, want its persistent key %s", alpha2.fingerprint, alpha.fingerprint)
	}
	alpha = alpha2
	put(t, alpha.outbox("beta"), alphaToBetaLater, old)
	r = c.run(t, "pickup")
	wantCode(t, r, 1)
	wantOutput(t, r, `agents advertise the name "alpha"`, alpha.fingerprint, impostor.fingerprint)
	if strings.Contains(r.stdout, "pickup: alpha: picked up") {
		t.Errorf("pickup with two agents named alpha visited one of them:\n%s", r)
	}
	wantTree(t, "with two alphas: the real alpha's outbox", alpha.outbox("beta"), alphaToBetaLater)
	wantTree(t, "with two alphas: the impostor's outbox", impostor.outbox("beta"), impostorToBeta)
	if n := carried("with two alphas"); n != 0 {
		t.Errorf("with two alphas the buffer holds %d files, want 0", n)
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Log("6. the impostor leaves: one sync carries the real alpha's new file to beta")
	impostor.stop(t)
	r = c.run(t, "sync")
	wantCode(t, r, 0)
	wantOutput(t, r, "pickup: alpha: picked up 1 file(s)", "dropoff: beta: delivered 1 file(s)")
	checkBoxes("after the impostor left", nil, nil, betaToAlpha, merge(alphaToBeta, alphaToBetaLater))
	wantTree(t, "after the impostor left: the impostor's outbox", impostor.outbox("beta"), impostorToBeta)

	t.Log("7. SIGTERM stops every agent cleanly, and then the carrier hears none")
	alpha.stop(t)
	beta.stop(t)
	r = c.run(t, "pickup")
	wantCode(t, r, 0)
	wantOutput(t, r, "no pickup hosts")
	if strings.Contains(r.stdout, "pickup: ") {
		t.Errorf("pickup after every agent stopped still found one:\n%s", r)
	}
	t.Logf("end-to-end run took %s", time.Since(began).Round(time.Millisecond))
}
