package agent

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestAuthorizedKeyOptionsOverSSH: the restricted line messor key prints
// logs in and serves SFTP; a from= that does not match the client, an
// expiry-time in the past and a command= other than an SFTP server each
// refuse their key, with a log line naming the line and the reason.
func TestAuthorizedKeyOptionsOverSSH(t *testing.T) {
	e := newEnv(t)
	line := func(opts string, s ssh.Signer) string {
		return opts + " " + string(ssh.MarshalAuthorizedKey(s.PublicKey()))
	}
	past := time.Now().Add(-48 * time.Hour).Format("20060102")
	future := time.Now().Add(48 * time.Hour).Format("20060102")
	elsewhere, expired, shell, fromLoopback, later, sftpServer := newSigner(t), newSigner(t), newSigner(t), newSigner(t), newSigner(t), newSigner(t)
	e.writeAuthorizedKeys(
		line(`restrict,command="internal-sftp"`, e.carrier) + // line 1
			line(`restrict,command="internal-sftp",from="10.0.0.0/8,192.168.*"`, elsewhere) + // 2
			line(`restrict,expiry-time="`+past+`"`, expired) + // 3
			line(`command="/bin/sh -c 'cat ~/.ssh/id_ed25519'"`, shell) + // 4
			line(`from="!10.*,127.0.0.0/8",no-pty`, fromLoopback) + // 5
			line(`expiry-time="`+future+`",command="internal-sftp"`, later) + // 6
			line(`restrict,command="/usr/lib/openssh/sftp-server"`, sftpServer)) // 7
	e.start()

	// The restricted line: SFTP works through it.
	c := e.sftp()
	if _, err := c.Stat("messor/outbox"); err != nil {
		t.Fatalf("SFTP over the restricted key: %v", err)
	}
	for name, s := range map[string]ssh.Signer{"from= matching": fromLoopback, "expiry in the future": later, "sftp-server path": sftpServer} {
		conn, err := e.dialWith(s)
		if err != nil {
			t.Errorf("%s: login refused: %v", name, err)
			continue
		}
		conn.Close()
	}
	for name, s := range map[string]ssh.Signer{"from= not matching": elsewhere, "expired": expired, "command= a shell": shell} {
		if conn, err := e.dialWith(s); err == nil {
			conn.Close()
			t.Errorf("%s: login succeeded", name)
		}
	}
	log := e.log.String()
	for _, want := range []string{"line=2", "not from an allowed address", "line=3", "expired", "line=4", "command="} {
		if !strings.Contains(log, want) {
			t.Errorf("agent log lacks %q:\n%s", want, log)
		}
	}
}

// TestRefusedKeyReachesNothing: a client whose key a line refuses gets no
// further by any other way in: no auth ("none"), a password,
// keyboard-interactive, or the refused key offered again beside another
// unlisted one. A key listed twice gets in by either line, as with sshd
// (a refused line does not end the search). Removing a key's line refuses
// the next login (the file is read at each).
func TestRefusedKeyReachesNothing(t *testing.T) {
	e := newEnv(t)
	line := func(opts string, s ssh.Signer) string {
		return opts + " " + string(ssh.MarshalAuthorizedKey(s.PublicKey()))
	}
	past := time.Now().Add(-48 * time.Hour).Format("20060102")
	elsewhere, twice, stranger := newSigner(t), newSigner(t), newSigner(t)
	e.writeAuthorizedKeys(line(`from="10.0.0.0/8"`, elsewhere) +
		line(`from="10.0.0.0/8"`, twice) + line(`expiry-time="`+past+`"`, twice) + line(`from="127.0.0.1"`, twice))
	e.start()
	answers := func(string, string, []string, []bool) ([]string, error) { return []string{"x"}, nil }
	for name, auth := range map[string][]ssh.AuthMethod{
		"none":                           nil,
		"password":                       {ssh.Password("")},
		"keyboard-interactive":           {ssh.KeyboardInteractive(answers)},
		"refused key, then a stranger's": {ssh.PublicKeys(elsewhere, stranger), ssh.Password("x")},
	} {
		if c, err := ssh.Dial("tcp", e.addr, e.clientConfig(auth...)); err == nil {
			c.Close()
			t.Errorf("%s: logged in", name)
		}
	}
	c, err := e.dialWith(twice)
	if err != nil {
		t.Fatalf("key listed twice, the last line allowing it: %v", err)
	}
	c.Close()
	e.writeAuthorizedKeys(line(`from="10.0.0.0/8"`, twice))
	if c, err := e.dialWith(twice); err == nil {
		c.Close()
		t.Error("login after the allowing line was removed")
	}
}
