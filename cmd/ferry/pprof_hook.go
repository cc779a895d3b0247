//go:build ferry_pprof

// A profiling build for bench/pgo.sh, which writes cmd/ferry/default.pgo:
// built with -tags ferry_pprof, ferry serves net/http/pprof on the address
// in FERRY_PPROF_LISTEN (the script gives a loopback port). The binaries
// ferry ships are built without the tag and have no such endpoint.

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("FERRY_PPROF_LISTEN")
	if addr == "" {
		return
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ferry: FERRY_PPROF_LISTEN: %v\n", err)
		os.Exit(exitFail)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go http.Serve(ln, mux)
}
