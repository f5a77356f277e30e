//go:build race

package connsrv

// raceEnabled: the race detector adds allocations of its own, so the
// allocation counts are not checked under it.
const raceEnabled = true
