// Command benchnode runs one of the processes ferrybench puts around the
// proxies under test, in a binary that carries nothing else:
//
//	benchnode origin   --listen ADDR                  GET /?size=N, POST drains
//	benchnode stdproxy --listen ADDR --upstream ADDR  httputil.ReverseProxy
//	benchnode l4relay  --listen ADDR --upstream ADDR  TCP relay with splice(2)
//	benchnode h1floor  --listen ADDR --upstream ADDR  HTTP/1.1 relay doing only framing
//	benchnode h1epoll  --listen ADDR --upstream ADDR [--epoll-wait raw|syscall]
//	                                                  the same on epoll loops, one per P (Linux)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ferrymesh/ferry/bench/internal/nodes"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchnode origin|stdproxy|l4relay|h1floor|h1epoll --listen ADDR [--upstream ADDR]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	upstream := fs.String("upstream", "", "upstream host:port (stdproxy, l4relay, h1floor, h1epoll)")
	wait := fs.String("epoll-wait", "raw", "h1epoll: how a loop blocks in epoll_wait: raw (RawSyscall6, keeps its P) or syscall (Syscall6, lets the scheduler take the P)")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "origin":
		err = nodes.ServeOrigin(*listen)
	case "stdproxy":
		rp, perr := nodes.StdProxy(*upstream)
		if err = perr; err == nil {
			err = nodes.Serve(*listen, rp)
		}
	case "l4relay":
		err = nodes.ServeL4Relay(*listen, *upstream)
	case "h1floor":
		err = nodes.ServeH1Floor(*listen, *upstream)
	case "h1epoll":
		switch *wait {
		case "raw", "syscall":
			err = nodes.ServeH1EpollWith(*listen, *upstream, nodes.H1EpollOptions{SyscallWait: *wait == "syscall"})
		default:
			err = fmt.Errorf("--epoll-wait %q: want raw or syscall", *wait)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchnode: %v\n", err)
		os.Exit(1)
	}
}
