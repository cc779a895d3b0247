package sidecar

import (
	"context"
	"fmt"
	"io"

	"net/http"
	"strings"

	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymesh/ferry/telemetry"
)

// tunnelSet tracks hijacked connections (WebSocket and other upgrades),
// which http.Server.Shutdown does not see, so a drain can close them.
type tunnelSet struct {
	mu     sync.Mutex
	conns  map[io.Closer]struct{}
	empty  chan struct{} // closed when the last tunnel ends; nil when none open
	closed bool          // closeAll ran: the drain is over, no new tunnel
}

func newTunnelSet() *tunnelSet { return &tunnelSet{conns: map[io.Closer]struct{}{}} }

// add tracks a tunnel. It refuses one once closeAll ran: a connection
// hijacked while the drain was ending would otherwise outlive it, open and
// unseen.
func (s *tunnelSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if len(s.conns) == 0 {
		s.empty = make(chan struct{})
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *tunnelSet) remove(c io.Closer) {
	s.mu.Lock()
	if _, ok := s.conns[c]; ok {
		delete(s.conns, c)
		if len(s.conns) == 0 {
			close(s.empty)
			s.empty = nil
		}
	}
	s.mu.Unlock()
}

// waitEmpty returns when no tunnel is open or ctx ends.
func (s *tunnelSet) waitEmpty(ctx context.Context) {
	s.mu.Lock()
	empty := s.empty
	s.mu.Unlock()
	if empty == nil {
		return
	}
	select {
	case <-empty:
	case <-ctx.Done():
	}
}

// closeAll ends every tunnel and refuses new ones; it returns how many
// there were.
func (s *tunnelSet) closeAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	n := len(s.conns)
	for c := range s.conns {
		if e, ok := c.(*tunnelEnds); ok {
			e.cut.Store(true) // before the close its copies see
		}
		c.Close()
	}
	clear(s.conns)
	if s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
	return n
}

// tunnel completes a protocol switch: it hands the caller the upstream's 101
// response and then copies bytes both ways until the upstream ends or
// either side breaks; a caller that half-closes still gets the rest. It
// returns the bytes that went through the tunnel each way: up from the
// caller, down from the upstream.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, res *http.Response, reqUpgrade, service, addr string, idleAfter time.Duration, x *exchange) (up, down int64) {
	resUpgrade := upgradeType(res.Header) // one the caller offered (see forward)
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		x.fail(w, failure{http.StatusBadGateway, "upstream switched protocols without a writable connection", telemetry.ReasonBadResponse, false, false})
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		x.fail(w, failure{http.StatusInternalServerError, fmt.Sprintf("cannot take over the connection for %q: %v", reqUpgrade, err), telemetry.ReasonOther, false, false})
		return
	}
	defer conn.Close()
	if testHookTunnelHijacked != nil {
		testHookTunnelHijacked()
	}
	// The drain's end closes both sides: a tunnel whose caller half-closed
	// waits on the upstream alone.
	ends := &tunnelEnds{caller: conn, upstream: back}
	if !p.tunnels.add(ends) {
		// ferry finished draining while this exchange switched: the
		// caller is told so on the connection taken, and the upstream's
		// side closes (the caller of tunnel closes res.Body).
		cw := &connWriter{conn: conn, bw: brw.Writer, h: http.Header{}}
		writeFailure(cw, errDrainOver)
		cw.finish()
		x.status, x.reason, x.err = errDrainOver.status, errDrainOver.kind, errGraceEnded
		return
	}
	defer p.tunnels.remove(ends)

	removeHopHeaders(res.Header, false)
	res.Header["Connection"] = []string{"Upgrade"}
	res.Header["Upgrade"] = []string{resUpgrade}
	head := *res
	head.Body = nil // Write must not copy the body: it is the tunnel
	if err := head.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	x.status = http.StatusSwitchingProtocols
	// timeouts.tunnel_idle: a tunnel where nothing moved for that long is
	// closed on both sides.
	idle := startIdleTimer(idleAfter, func(error) {
		conn.Close()
		back.Close()
	})
	defer idle.stop()
	upDone, downDone := make(chan bool, 1), make(chan bool, 1)
	// Bytes the caller sent right after its request sit in brw's buffer;
	// reading from brw forwards them first.
	go tunnelCopy(back, brw, idle, &up, upDone)
	go tunnelCopy(conn, back, idle, &down, downDone)
	select {
	case clean := <-upDone:
		// The caller ended its side. A clean end went on to the upstream
		// as a half-close: its answer may still be coming, and the tunnel
		// lasts until the upstream ends too (tunnel_idle and the drain
		// still bound it).
		if !clean {
			conn.Close()
			back.Close()
		}
		<-downDone
	case <-downDone:
		// The upstream ended: the tunnel is over. Closing both ends the
		// caller's copy too.
		conn.Close()
		back.Close()
		<-upDone
	}
	back.Close()
	if ends.cut.Load() {
		// The drain's grace end cut it: reported as an exchange cut
		// mid-body is, not as a tunnel that ended on its own.
		x.reason, x.err = telemetry.ReasonGraceEnded, errGraceEnded
	}
	return up, down
}

// testHookTunnelHijacked, set by tests only, runs when a tunnel took the
// caller's connection, before it is tracked.
var testHookTunnelHijacked func()

// offered reports whether the protocol an upstream switched to is one the
// caller offered: a request's Upgrade header may list several, in order of
// preference (RFC 9110 section 7.8), and the server picks one.
func offered(requested, chosen string) bool {
	chosen = strings.TrimSpace(chosen)
	if chosen == "" {
		return false
	}
	for tok := range strings.SplitSeq(requested, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), chosen) {
			return true
		}
	}
	return false
}

// tunnelCopy moves bytes one way through a pooled buffer, feeding the idle
// timer (nil: none), and stores how many in n before it reports. At the
// source's end it half-closes dst and reports true on done; false when the
// copy failed or dst cannot half-close.
func tunnelCopy(dst io.Writer, src io.Reader, idle *idleTimer, n *int64, done chan<- bool) {
	bp := bufPool.Get().(*[]byte)
	var err error
	*n, err = io.CopyBuffer(writerOnly{dst}, touchingReader{src, idle}, *bp)
	bufPool.Put(bp)
	clean := false
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		clean = cw.CloseWrite() == nil && err == nil
	}
	done <- clean
}

// touchingReader records activity on an idle timer at every read.
type touchingReader struct {
	r    io.Reader
	idle *idleTimer
}

func (t touchingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.idle.touch()
	}
	return n, err
}

// writerOnly and readerOnly hide ReadFrom/WriteTo so io.CopyBuffer uses the
// pooled buffer instead of allocating its own.
type writerOnly struct{ io.Writer }
type readerOnly struct{ io.Reader }

// tunnelEnds are a tunnel's two connections, closed together; cut is set
// when the drain's end (tunnelSet.closeAll) closed them.
type tunnelEnds struct {
	caller, upstream io.Closer
	cut              atomic.Bool
}

func (e *tunnelEnds) Close() error {
	e.upstream.Close()
	return e.caller.Close()
}
