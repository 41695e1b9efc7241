//go:build race

package e2e

// raceEnabled: the test binary was built with -race, so the messor binary
// under test is built with -race too.
const raceEnabled = true
