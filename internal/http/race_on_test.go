//go:build race

package http_test

// raceEnabled: the race detector changes allocation counts.
const raceEnabled = true
