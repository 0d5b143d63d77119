//go:build !race

package e2e

// raceEnabled says the tests run with the race detector: the nodes are
// built with it too.
const raceEnabled = false
