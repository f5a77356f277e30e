//go:build race

package harness

// raceEnabled builds the agua binary with the race detector when the tests
// themselves run with -race.
const raceEnabled = true
