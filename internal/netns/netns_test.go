package netns

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// helperEnv selects a helper role when the test binary is re-executed
// inside a namespace.
const helperEnv = "MESSOR_NETNS_TEST_HELPER"

// testGroup is an administratively scoped group, so the probe can never be
// mistaken for real traffic even if it escaped (it cannot).
var testGroup = &net.UDPAddr{IP: net.IPv4(239, 255, 77, 77), Port: 47777}

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "mcast-recv":
		os.Exit(helper(mcastRecv))
	case "mcast-send":
		os.Exit(helper(mcastSend))
	case "tcp-listen":
		os.Exit(helper(tcpListen))
	case "tcp-dial":
		os.Exit(helper(tcpDial))
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

func helper(f func() error) int {
	if err := f(); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}

// mcastRecv joins testGroup on eth0, prints "ready", then prints the first
// datagram it receives and the interface it came in on.
func mcastRecv() error {
	ifi, err := net.InterfaceByName("eth0")
	if err != nil {
		return err
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: testGroup.IP, Port: testGroup.Port})
	if err != nil {
		return err
	}
	defer c.Close()
	p := ipv4.NewPacketConn(c)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: testGroup.IP}); err != nil {
		return err
	}
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		return err
	}
	fmt.Println("ready")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1500)
	n, cm, src, err := p.ReadFrom(buf)
	if err != nil {
		return err
	}
	in := ""
	if cm != nil {
		if ifi, err := net.InterfaceByIndex(cm.IfIndex); err == nil {
			in = ifi.Name
		}
	}
	fmt.Printf("%s from %s on %s\n", buf[:n], src.(*net.UDPAddr).IP, in)
	return nil
}

// mcastSend sends a few datagrams to testGroup, without naming an
// interface: the 224.0.0.0/4 route must lead the way.
func mcastSend() error {
	c, err := net.DialUDP("udp4", nil, testGroup)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := 0; i < 5; i++ {
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func tcpListen() error {
	l, err := net.Listen("tcp4", os.Getenv("ADDR"))
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("ready")
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = fmt.Fprintf(c, "hi %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
	return err
}

func tcpDial() error {
	c, err := net.DialTimeout("tcp4", os.Getenv("ADDR"), 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	return err
}

// start runs the test binary as helper role in node i and waits for its
// "ready" line when wantReady is set.
func start(t *testing.T, nt *Net, i int, role string, env []string, wantReady bool) (*exec.Cmd, *bufio.Reader, *strings.Builder) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := nt.Command(i, exe, "-test.run=^$")
	cmd.Env = append(append(os.Environ(), helperEnv+"="+role), env...)
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(out)
	if wantReady {
		line, err := r.ReadString('\n')
		if line != "ready\n" {
			_ = cmd.Wait()
			t.Fatalf("%s in node %d: %q, %v; stderr: %s", role, i, line, err, stderr)
		}
	}
	return cmd, r, stderr
}

func TestNew(t *testing.T) {
	t.Parallel()
	nt := New(t, 3)
	if nt.Len() != 3 {
		t.Fatalf("Len = %d", nt.Len())
	}
	seen := map[string]bool{}
	for i := 0; i < nt.Len(); i++ {
		if seen[nt.NS(i)] || seen[nt.IP(i)] {
			t.Fatalf("node %d: name %s or address %s not unique", i, nt.NS(i), nt.IP(i))
		}
		seen[nt.NS(i)], seen[nt.IP(i)] = true, true
		out, err := nt.Command(i, "ip", "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil {
			t.Fatalf("node %d: %v: %s", i, err, out)
		}
		if !strings.Contains(string(out), " "+nt.IP(i)+"/24 ") {
			t.Errorf("node %d: eth0 lacks %s: %s", i, nt.IP(i), out)
		}
		out, err = nt.Command(i, "ip", "-6", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " "+nt.LinkLocal6(i)+"/64 ") || strings.Contains(string(out), "tentative") {
			t.Errorf("node %d: eth0 lacks a usable %s: %v %s", i, nt.LinkLocal6(i), err, out)
		}
		out, err = nt.Command(i, "ip", "-o", "link", "show", "dev", "lo").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "UP") {
			t.Errorf("node %d: lo not up: %v %s", i, err, out)
		}
	}

	t.Run("tcp", func(t *testing.T) {
		addr := net.JoinHostPort(nt.IP(0), "4711")
		l, lr, lerr := start(t, nt, 0, "tcp-listen", []string{"ADDR=" + addr}, true)
		d, dr, derr := start(t, nt, 2, "tcp-dial", []string{"ADDR=" + addr}, false)
		line, _ := dr.ReadString('\n')
		if err := d.Wait(); err != nil {
			t.Fatalf("dial: %v: %s", err, derr)
		}
		if err := l.Wait(); err != nil {
			t.Fatalf("listen: %v: %s", err, lerr)
		}
		_ = lr
		if want := "hi " + nt.IP(2) + "\n"; line != want {
			t.Errorf("got %q, want %q", line, want)
		}
	})

	t.Run("multicast", func(t *testing.T) {
		type recv struct {
			cmd    *exec.Cmd
			r      *bufio.Reader
			stderr *strings.Builder
		}
		var rs []recv
		for _, i := range []int{1, 2} {
			c, r, e := start(t, nt, i, "mcast-recv", nil, true)
			rs = append(rs, recv{c, r, e})
		}
		s, _, serr := start(t, nt, 0, "mcast-send", nil, false)
		if err := s.Wait(); err != nil {
			t.Fatalf("send: %v: %s", err, serr)
		}
		for k, r := range rs {
			line, _ := r.r.ReadString('\n')
			if err := r.cmd.Wait(); err != nil {
				t.Fatalf("receiver %d: %v: %s", k+1, err, r.stderr)
			}
			if want := "hello from " + nt.IP(0) + " on eth0\n"; line != want {
				t.Errorf("receiver %d: got %q, want %q", k+1, line, want)
			}
		}
	})
}

// TestCleanup checks that a Net leaves no namespace behind.
func TestCleanup(t *testing.T) {
	t.Parallel()
	var names []string
	t.Run("inner", func(t *testing.T) {
		nt := New(t, 2)
		names = append(names, nt.NS(0), nt.NS(1), nt.bridge)
	})
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s still exists after cleanup", n)
		}
	}
}
