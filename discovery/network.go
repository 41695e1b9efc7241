package discovery

import (
	"bufio"
	"bytes"
	"context"
	"net/netip"
	"os/exec"
	"strings"
)

// LocalAddr reports whether ip is on a local network: loopback, RFC 1918,
// IPv6 ULA (fc00::/7), or link-local. Carrier-grade NAT (100.64.0.0/10)
// and every other address are remote: reaching them may cost a metered
// link.
func LocalAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast()
}

// Metered reports whether NetworkManager says a device's connection is
// metered ("yes" or "yes (guessed)"), and by what. Where there is no
// cheap check (no nmcli; Android, whose job scheduler has its own
// --network unmetered) it reports false.
func Metered(ctx context.Context) (metered bool, by string) {
	if _, err := exec.LookPath("nmcli"); err != nil {
		return false, ""
	}
	out, err := exec.CommandContext(ctx, "nmcli", "-t", "-f", "GENERAL.METERED", "dev", "show").Output()
	if err != nil {
		return false, ""
	}
	return nmMetered(out), "NetworkManager"
}

// nmMetered reads `nmcli -t -f GENERAL.METERED dev show`.
func nmMetered(out []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "GENERAL.METERED:"); ok && strings.HasPrefix(v, "yes") {
			return true
		}
	}
	return false
}
