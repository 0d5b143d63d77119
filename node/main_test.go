package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// No test leaves a goroutine behind: every connection's reader, worker and
// writer end with it, and every node's goroutines end at its shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of http.DefaultClient (admin endpoint tests).
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
