package conformance

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	RunMostlyWaiting()
	os.Exit(m.Run())
}
