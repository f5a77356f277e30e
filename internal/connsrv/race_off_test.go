//go:build !race

package connsrv

const raceEnabled = false
