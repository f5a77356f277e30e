//go:build race

package shield

// raceEnabled shrinks the heaviest loops under the race detector, which
// makes them ten times slower.
const raceEnabled = true
