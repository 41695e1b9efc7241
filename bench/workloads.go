package main

import "math"

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// workloads lists what a run measures, scaled by --scale, or tiny with
// --smoke.
//
// The Wi-Fi workloads are smaller than the loopback ones so that a full
// run (3 runs x 5 tools) stays near 15 minutes: at 25 MB/s a 1 GiB file
// alone takes 43 s each way. scp and sftp copy small files one after the
// other, a few round trips each, so on the 10 ms link 5,000 files would take
// minutes per run: they run on the Wi-Fi small-file set only in --smoke.
func (r *runner) workloads() []*workload {
	s := r.o.Scale
	n := func(x int) int { return max(1, int(math.Round(float64(x)*s))) }
	b := func(x int64) int64 { return max(1, int64(math.Round(float64(x)*s))) }
	fast := []string{"messor", "rsync"}
	skipSeq := "scp and sftp not run: they copy one file at a time, several 10 ms round trips each (minutes per run)"
	if r.o.Smoke {
		return []*workload{
			{Key: "big", Title: "one big file", Link: "loopback", files: oneFile("big.bin", 4*mib)},
			{Key: "small", Title: "small files", Link: "loopback", files: smallTree(60, 4*kib)},
			{Key: "photos", Title: "photo card", Link: "loopback", files: photoCard(5, 64*kib, 192*kib)},
			{Key: "dedup", Title: "dedup-heavy", Link: "loopback", files: dedupSet(40, 4, 16*kib)},
			{Key: "e2e", Title: "end to end, one file", Link: "loopback", files: oneFile("e2e.bin", 3*mib)},
			{Key: "wifi-big", Title: "one big file", Link: "wifi", files: oneFile("big.bin", 2*mib)},
			{Key: "wifi-small", Title: "small files", Link: "wifi", files: smallTree(30, 4*kib)},
			{Key: "wifi-photos", Title: "photo card", Link: "wifi", files: photoCard(3, 64*kib, 192*kib)},
			{Key: "ttfb", Title: "time to first byte", Link: "loopback", files: oneFile("ttfb.bin", 2*mib)},
			{Key: "rss100k", Title: "many small files", Link: "loopback", files: smallTree(200, 512)},
		}
	}
	return []*workload{
		{Key: "big", Title: "one 1 GiB file", Link: "loopback", files: oneFile("big.bin", b(gib))},
		{Key: "small", Title: "5,000 files of 4 KiB", Link: "loopback", files: smallTree(n(5000), 4*kib)},
		{Key: "photos", Title: "photo card, 2-6 MiB files", Link: "loopback", files: photoCard(n(300), 2*mib, 6*mib)},
		{Key: "dedup", Title: "dedup-heavy: 2,000 paths, 8 contents of 64 KiB", Link: "loopback", files: dedupSet(n(2000), 8, 64*kib)},
		{Key: "e2e", Title: "end to end, one 512 MiB file", Link: "loopback", files: oneFile("e2e.bin", b(512*mib))},
		{Key: "wifi-big", Title: "one 256 MiB file", Link: "wifi", files: oneFile("big.bin", b(256*mib))},
		{Key: "wifi-small", Title: "5,000 files of 4 KiB", Link: "wifi", files: smallTree(n(5000), 4*kib), tools: fast, Skip: skipSeq},
		{Key: "wifi-photos", Title: "photo card, 60 files of 2-6 MiB", Link: "wifi", files: photoCard(n(60), 2*mib, 6*mib)},
		{Key: "ttfb", Title: "time to first byte", Link: "loopback", files: oneFile("ttfb.bin", 64*mib)},
		{Key: "rss100k", Title: "100,000 small files", Link: "loopback", files: smallTree(n(100000), 512)},
	}
}
