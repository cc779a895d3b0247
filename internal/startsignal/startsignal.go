// Package startsignal takes SIGTERM, SIGINT and SIGHUP for `ferry run` from
// the moment the process can: its initialisation, which Go runs before
// that of every package ferry imports but the few it needs itself.
//
// A signal Go's runtime receives while nothing has asked for it ends the
// process at once (its default action): no drain, no deregistration, an
// exit status from the signal. cmd/ferry asked for the signals only once
// its config was read and its sidecar built, so a SIGTERM in the first
// milliseconds (a pod deleted while it starts) killed it. Here they are
// asked for in an init function, before the heavy packages (Kubernetes
// types, OpenTelemetry, gRPC) initialise and long before main; the
// signals wait in buffered channels until cmd/ferry takes them.
//
// What stays uncovered is the Go runtime's own start and the
// initialisation of the standard packages this one imports (os,
// os/signal and theirs): about a millisecond, measured by
// cmd/ferry's TestSignalRightAfterStartNeverKillsFerry. A signal then
// still kills the process.
//
// It does nothing in a process whose first argument is not "run" (the
// other subcommands keep Go's default actions, and test binaries their
// own handling).
package startsignal

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

var (
	mu   sync.Mutex
	stop chan os.Signal // SIGTERM, SIGINT; nil when not caught here, or taken
	hup  chan os.Signal // SIGHUP
)

func init() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		return
	}
	// Two: the first signal asks for a drain, the second ends it.
	stop = make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	hup = make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
}

// Take hands over the channels the signals have been going to since the
// process began: SIGTERM and SIGINT on stopc, SIGHUP on hupc, with any
// that came meanwhile waiting in them. ok is false when they were not
// caught here (a process not started as `ferry run`, or a second Take):
// the caller registers its own then.
func Take() (stopc, hupc chan os.Signal, ok bool) {
	mu.Lock()
	defer mu.Unlock()
	if stop == nil {
		return nil, nil, false
	}
	stopc, hupc = stop, hup
	stop, hup = nil, nil
	return stopc, hupc, true
}
