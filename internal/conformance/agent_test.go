package conformance

import "testing"

// TestAgent runs the suite against messor's own agent.
func TestAgent(t *testing.T) {
	t.Parallel()
	Run(t, Agent)
}
