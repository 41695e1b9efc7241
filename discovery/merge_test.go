package discovery

import (
	"reflect"
	"testing"
)

func TestMerge(t *testing.T) {
	file := func(name, hostName string) Host {
		return Host{Name: name, HostName: hostName, Port: 22, User: "u", Source: SourceHostsFile,
			IdentityFiles: []string{"/home/u/.ssh/id_ed25519"}, KnownHostsFiles: []string{"/home/u/.ssh/known_hosts"}}
	}
	agent := func(name, hostName, fp string) Host {
		return Host{Name: name, HostName: hostName, Port: 2290, Source: SourceMDNS, Agent: true, Fingerprint: fp}
	}
	withAgent := func(h Host, fp string) Host { h.Agent, h.Fingerprint = true, fp; return h }

	tests := []struct {
		name       string
		file, mdns []Host
		want       []Host
	}{
		{"both empty", nil, nil, []Host{}},
		{"file only keeps order", []Host{file("zeta", "z"), file("alpha", "a")}, nil,
			[]Host{file("zeta", "z"), file("alpha", "a")}},
		{"mdns only sorted", nil, []Host{agent("c", "10.0.0.3", "fc"), agent("a", "10.0.0.1", "fa"), agent("b", "10.0.0.2", "fb")},
			[]Host{agent("a", "10.0.0.1", "fa"), agent("b", "10.0.0.2", "fb"), agent("c", "10.0.0.3", "fc")}},
		{"file wins dialling, keeps agent info",
			[]Host{file("nas", "nas.lan")},
			[]Host{agent("nas", "10.0.0.9", "SHA256:x")},
			[]Host{withAgent(file("nas", "nas.lan"), "SHA256:x")}},
		{"mixed: file first in order, then mdns-only sorted",
			[]Host{file("pi", "pi.lan"), file("laptop", "laptop.lan")},
			[]Host{agent("zz", "10.0.0.26", "fz"), agent("laptop", "10.0.0.5", "fl"), agent("aa", "10.0.0.1", "fa")},
			[]Host{file("pi", "pi.lan"), withAgent(file("laptop", "laptop.lan"), "fl"),
				agent("aa", "10.0.0.1", "fa"), agent("zz", "10.0.0.26", "fz")}},
		{"duplicates within one list keep the first",
			[]Host{file("a", "first"), file("a", "second")},
			[]Host{agent("b", "10.0.0.1", "f1"), agent("b", "10.0.0.2", "f2")},
			[]Host{file("a", "first"), agent("b", "10.0.0.1", "f1")}},
		{"mdns without fingerprint keeps the file's",
			[]Host{withAgent(file("x", "x.lan"), "pinned")},
			[]Host{{Name: "x", HostName: "10.0.0.1", Source: SourceMDNS}},
			[]Host{withAgent(file("x", "x.lan"), "pinned")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fileCopy := append([]Host(nil), tt.file...)
			mdnsCopy := append([]Host(nil), tt.mdns...)
			got := Merge(tt.file, tt.mdns)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Merge:\n got %+v\nwant %+v", got, tt.want)
			}
			if !reflect.DeepEqual(fileCopy, tt.file) || !reflect.DeepEqual(mdnsCopy, tt.mdns) {
				t.Errorf("Merge modified its inputs")
			}
		})
	}
}
