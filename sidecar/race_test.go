//go:build race

package sidecar

// raceEnabled lets the gigabyte tests step aside under the race detector,
// which slows loopback copying tenfold; they run in the normal pass.
const raceEnabled = true
