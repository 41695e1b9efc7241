package carrier

import (
	"bytes"
	"encoding/binary"
	"testing"
)

type bufCloser struct {
	bytes.Buffer
	writes int
}

func (b *bufCloser) Write(p []byte) (int, error) { b.writes++; return b.Buffer.Write(p) }

func (*bufCloser) Close() error { return nil }

// sftpPacket frames body (type, id and the rest) as SFTP sends it.
func sftpPacket(body ...[]byte) []byte {
	b := bytes.Join(body, nil)
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func sftpOpenPacket(id uint32, p string, pflags uint32, attrs ...[]byte) []byte {
	return sftpPacket([]byte{sftpOpen}, u32(id), u32(uint32(len(p))), []byte(p), u32(pflags), bytes.Join(attrs, nil))
}

// TestPrivateCreates: an open that may create a file and asks for no
// attributes asks for 0600; every other packet, and the framing of all,
// passes unchanged, however the writes are split.
func TestPrivateCreates(t *testing.T) {
	const read, write = 0x01, 0x02
	data := bytes.Repeat([]byte{sftpOpen}, 300) // a write whose data looks like opens
	in := [][]byte{
		sftpOpenPacket(1, "messor/inbox/a/.messor.part.x", write|sftpCreat|0x10, u32(0)),
		sftpOpenPacket(2, "messor/outbox/b/f", read, u32(0)),
		sftpPacket([]byte{6}, u32(3), u32(4), []byte("hndl"), u32(0), u32(0), u32(uint32(len(data))), data),
		sftpOpenPacket(4, "p", write|sftpCreat, u32(sftpAttrPerms), u32(0o644)),
		sftpOpenPacket(5, "q", read|write|sftpCreat, u32(0)),
	}
	want := [][]byte{
		sftpOpenPacket(1, "messor/inbox/a/.messor.part.x", write|sftpCreat|0x10, u32(sftpAttrPerms), u32(0o600)),
		in[1], in[2], in[3],
		sftpOpenPacket(5, "q", read|write|sftpCreat, u32(sftpAttrPerms), u32(0o600)),
	}
	all, wantAll := bytes.Join(in, nil), bytes.Join(want, nil)
	for _, step := range []int{len(all), 1, 3, 7, 64} {
		var out bufCloser
		c := &privateCreates{w: &out}
		for i := 0; i < len(all); i += step {
			chunk := all[i:min(i+step, len(all))]
			if n, err := c.Write(chunk); err != nil || n != len(chunk) {
				t.Fatalf("step %d: Write: %d, %v", step, n, err)
			}
		}
		if !bytes.Equal(out.Bytes(), wantAll) {
			t.Errorf("writes of %d bytes: got\n%x\nwant\n%x", step, out.Bytes(), wantAll)
		}
	}
	// As pkg/sftp writes: a packet a write, passed on a write each.
	var out bufCloser
	c := &privateCreates{w: &out}
	for _, pkt := range in {
		c.Write(pkt)
	}
	if !bytes.Equal(out.Bytes(), wantAll) || out.writes != len(in) {
		t.Errorf("a packet a write: %d writes passed on, want %d; same bytes: %v", out.writes, len(in), bytes.Equal(out.Bytes(), wantAll))
	}
}
