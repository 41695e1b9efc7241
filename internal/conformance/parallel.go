package conformance

import (
	"flag"
	"runtime"
	"strconv"
)

// WaitingTestsParallel is how many parallel tests RunMostlyWaiting lets run
// at once: these tests mostly wait (on logins through the host's shell, on
// links capped or cut, on hosts hashing, on stopped processes), each using
// a fraction of a core, so GOMAXPROCS of them at a time (go test's default)
// leaves a small machine mostly idle.
const WaitingTestsParallel = 6

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
