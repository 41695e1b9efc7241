package conformance

import (
	"flag"
	"runtime"
	"strconv"
)

// WaitingTestsParallel is how many parallel tests RunMostlyWaiting lets run
// at once: these tests mostly wait (on logins through the host's shell, on
// links capped or cut, on hosts hashing, on stopped processes), so
// GOMAXPROCS of them at a time (go test's default) leaves a small machine
// mostly idle: on 2 cores the fault suite used about a quarter of a core,
// and the conformance suite 179 CPU seconds in 20 minutes. Not more: each
// test's own short timeouts (idle watches of a few seconds) must hold
// beside the others.
const WaitingTestsParallel = 4

// RunMostlyWaiting sets -test.parallel to WaitingTestsParallel (or
// GOMAXPROCS, if more) unless the command line gave it; call it from
// TestMain before m.Run.
func RunMostlyWaiting() {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		flag.Set("test.parallel", strconv.Itoa(max(WaitingTestsParallel, runtime.GOMAXPROCS(0))))
	}
}
