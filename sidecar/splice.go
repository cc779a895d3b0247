package sidecar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The zero-copy path. A bodiless request (GET, HEAD, DELETE, ...) to a
// plain-TCP HTTP/1.1 upstream goes through ferry's own small HTTP/1.1
// client instead of net/http's Transport, because that client can hand the
// response body over as the upstream socket itself: when the body has a
// Content-Length, the relay passes the socket (as an io.LimitedReader) to
// the caller's http.ResponseWriter, whose ReadFrom reaches
// net.TCPConn.ReadFrom, which moves the bytes with splice(2) without
// copying them through user space. Everything else (request bodies,
// chunked or small responses, HTTP/2, upgrades, Expect) takes the pooled
// buffer path.

const (
	// spliceMin is the smallest remaining body moved kernel to kernel;
	// below it the splice set-up costs more than the copy saves.
	spliceMin = 64 << 10
	// spliceSegment is how much one ReadFrom moves. The body idle timer is
	// fed between segments, and while one moves it asks the kernel whether
	// bytes went through the source socket (idleTimer.watchMove).
	spliceSegment = 1 << 20
	// poolIdleTimeout drops pooled upstream connections idle this long.
	poolIdleTimeout = 90 * time.Second
	// poolMaxIdle bounds idle connections kept per endpoint.
	poolMaxIdle = 256
	// poolSweepInterval is how often idle connections are checked for a
	// close by the upstream or expiry.
	poolSweepInterval = 5 * time.Second
	// poolTrustWindow: a connection back in the pool for less than this
	// is taken without peeking at its socket (a system call per request
	// under load); older ones are checked for a close by the upstream.
	// A replayable request that meets a close anyway is retried on a new
	// connection. A bodiless request checks any reused connection for
	// bytes or a close as its head goes out (see exchange), an upload's
	// is always peeked at here.
	poolTrustWindow = 100 * time.Millisecond
	// uploadReuseIdle: an upload from the caller's socket (socketUpload)
	// takes a pooled connection only if it was idle for less than this,
	// else a new one. Once its move started the body cannot be sent
	// again, so it must not meet an upstream closing an idle connection
	// (many close after 5 s) as it goes out; a connection that carried a
	// request a moment ago is not being closed for idleness.
	uploadReuseIdle = time.Second
	// maxResponseHeader bounds an upstream's response head, the interim
	// (1xx) heads before it included, here and in net/http's Transport
	// (its MaxResponseHeaderBytes, see newTransport). An h2c upstream's
	// final head is checked once net/http's HTTP/2 client has read it
	// (see headOver).
	maxResponseHeader = 1 << 20
)

// spliced counts body bytes moved kernel to kernel, for tests and metrics.
var spliced atomic.Int64

// fastH1 is the HTTP/1.1 round tripper of one upstream service: bodiless
// requests on its own connection pool, everything else on net/http's.
type fastH1 struct {
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	responseHeader time.Duration
	fallback       *http.Transport

	mu       sync.Mutex
	idle     map[string]*idleList
	closed   bool
	sweeping bool // a sweep is scheduled
}

// idleList is the pool's idle connections to one endpoint, the freshest
// last. A connection keeps the list it goes back to (h1Conn.home): its
// return finds it without a look-up by address.
type idleList struct {
	conns []*h1Conn
	gone  bool // no longer the pool's (sweep dropped it empty, or the pool closed)
}

type h1Conn struct {
	// home is the pool's list of the connection's endpoint once it was
	// in one (see put); nil before.
	home *idleList
	tc   *net.TCPConn
	raw  *rawSock          // tc's raw reads and writes; nil when not available
	lr   *io.LimitedReader // under br: bounds a response header
	w    io.Writer         // what bw writes to (tc, or raw)
	// br and bw are nil while the connection is parked in the pool.
	br    *bufio.Reader
	bw    *bufio.Writer
	since int64 // monoNow() since which it is idle
	// fields: the last response's header lines when they can go on as
	// they came (see rawFields); RoundTrip hands them to the body.
	fields rawFields
	// plain: the last response when parseResponse read it; RoundTrip
	// makes its body the spliceBody allocated with it.
	plain *plainResponse

	// The response header timeout of a bodiless exchange (awaitHeader),
	// or its attempt's timeouts.per_try when that ends first (hper).
	hmu      sync.Mutex
	ht       lazyTimer
	hdue     int64 // monoNow() by which the header must be in; 0: none awaited
	hper     bool  // hdue is the attempt's per-try bound; set by the exchange's goroutine
	hexpired bool  // the timer cut the wait: the read and write deadlines are in the past
}

// awaitHeader bounds the wait for a response header to d. It takes no
// timer operation per request on a busy connection (see lazyTimer): when
// the timer finds the header overdue, it moves the socket's read
// deadline into the past, which ends the read with a timeout.
func (c *h1Conn) awaitHeader(d time.Duration) { c.awaitHeaderAt(d, 0) }

// awaitHeaderAt is awaitHeader for a caller that read now (see monoOr) a
// moment ago.
func (c *h1Conn) awaitHeaderAt(d time.Duration, now int64) {
	now = monoOr(now)
	c.awaitHeaderBy(monoAdd(now, d), false, now)
}

// awaitHeaderBy bounds the wait for a response header to due (a monoNow()
// time); perTry says the bound is the attempt's timeouts.per_try (see
// headerErr). now is a monoNow() reading taken a moment ago, or 0.
func (c *h1Conn) awaitHeaderBy(due int64, perTry bool, now int64) {
	c.hmu.Lock()
	if c.ht.f == nil {
		c.ht.f = c.headerTimer
	}
	c.hdue, c.hper = due, perTry
	c.ht.armByAt(due, now)
	c.hmu.Unlock()
}

// headerIn ends the wait awaitHeader bounds.
func (c *h1Conn) headerIn() {
	c.hmu.Lock()
	c.hdue = 0
	if c.hexpired {
		c.hexpired = false
		c.tc.SetDeadline(time.Time{})
	}
	c.hmu.Unlock()
}

// headerErr is err, the failure to read a response head that awaitHeader
// bounded, as the bound's own error when the bound cut it: the per-try
// timeout's, or the response header timeout's (errHeaderTimeout, which
// timeoutAware made of it).
func (c *h1Conn) headerErr(err error) error {
	if err == errHeaderTimeout && c.hper {
		return errPerTryTimeout
	}
	return err
}

// headNotOut ends the per-try bound (perTry not 0) of a head whose write
// failed with err, and says why it failed: errPerTryTimeout when the bound
// cut it.
func (c *h1Conn) headNotOut(perTry int64, err error) error {
	if perTry == 0 {
		return err
	}
	c.headerIn()
	return c.headerErr(timeoutAware(err))
}

func (c *h1Conn) headerTimer() {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	c.ht.fired()
	now := monoNow()
	switch {
	case c.hdue == 0:
	case now < c.hdue:
		c.ht.armByAt(c.hdue, now)
	default:
		c.hdue = 0
		c.hexpired = true
		// The write too: the head may wait for room in a send buffer
		// the upstream does not empty.
		c.tc.SetDeadline(time.Unix(1, 0))
	}
}

// close closes the connection and stops its timer, which would otherwise
// hold the connection and its buffers until it fires.
func (c *h1Conn) close() error {
	c.hmu.Lock()
	c.ht.stop()
	c.hmu.Unlock()
	return c.tc.Close()
}

// cancelHook closes an upstream connection when its exchange's context
// ends, so that a read or write waiting on it returns.
type cancelHook struct {
	le     *laneExchange // the lane request's own hook, or
	stopFn func() bool   // context.AfterFunc's
}

// closeOnCancel hooks tc to ctx: through the lane request's exchange when
// ctx ends only with it (no per-try or overall timeout below it), else
// with context.AfterFunc.
func closeOnCancel(ctx context.Context, tc *net.TCPConn) cancelHook {
	if le := laneOwned(ctx); le != nil {
		le.hooked.Store(tc)
		if ctx.Err() != nil {
			le.fire() // cancelled before the hook was seen
		}
		return cancelHook{le: le}
	}
	return cancelHook{stopFn: context.AfterFunc(ctx, func() { tc.Close() })}
}

// stop unhooks the connection; false when the context ended first and its
// connection was (or is being) closed.
func (h cancelHook) stop() bool {
	if h.le != nil {
		return h.le.hooked.Swap(nil) != nil
	}
	return h.stopFn()
}

// eligible reports whether a request can take the zero-copy client. le is
// the lane exchange of out's context, or nil: its first attempt's header
// may be known to hold no Upgrade or Expect field (outRequest.bare).
func eligible(out *http.Request, le *laneExchange) bool {
	return out.Body == nil && out.ContentLength == 0 &&
		(le != nil && out == &le.first.req && le.first.bare ||
			out.Header["Upgrade"] == nil && out.Header["Expect"] == nil) &&
		out.URL.Scheme == "http"
}

// bufferedUpload returns the body of out when ferry's client sends it with
// the head: a lane request's (le's) with a body of known length that the
// lane has read from the caller's socket whole, none of it taken yet.
// data is that body in the lane's read buffer, which nothing reads again
// before the exchange ends (the lane reads its next request only then,
// and a watch of the caller reads the socket, not the buffer); nil when
// out takes another way. Such a body is most small uploads (a
// JSON POST comes with its head): net/http's Transport, which took them,
// cost a 1 KiB POST about 110 thousand instructions against 17 thousand
// for a GET, with two goroutines of its own per exchange.
func bufferedUpload(out *http.Request, le *laneExchange) (a *attemptBody, data []byte) {
	if le == nil || out.ContentLength <= 0 || out.URL.Scheme != "http" ||
		!(out == &le.first.req && le.first.bare || out.Header["Upgrade"] == nil && out.Header["Expect"] == nil) {
		return nil, nil
	}
	a, ok := out.Body.(*attemptBody)
	if !ok || a.replaying || a.trip != nil || a.b.n.Load() != 0 {
		return nil, nil
	}
	sb, ok := a.b.rc.(*socketBody)
	if !ok || len(sb.bufs) != 1 || sb.expect.Load() || sb.left.Load() != out.ContentLength {
		return nil, nil
	}
	br := sb.bufs[0]
	if int64(br.Buffered()) < out.ContentLength {
		return nil, nil
	}
	data, err := br.Peek(int(out.ContentLength))
	if err != nil {
		return nil, nil
	}
	laneBuffered.Add(1)
	le.buffered = true
	return a, data
}

// takeBuffered takes the body bufferedUpload found from the caller, as
// any transport's reads would: it is counted, feeds the idle timer, and
// its end pauses that timer while the upstream thinks. data stays whole
// in the lane's buffer for the sends that follow.
func takeBuffered(a *attemptBody, want int64) error {
	n, err := io.Copy(io.Discard, a)
	if err == nil && n != want {
		err = fmt.Errorf("ferry: %d of %d buffered body bytes taken", n, want)
	}
	return err
}

// socketUpload reports whether a request's body is read from the caller's
// socket (a taken-over connection's, or the lane's) with a known length,
// which ferry's client moves itself on a goroutine of its own while it
// reads the response (exchangeUpload): socket to socket from spliceMin on,
// through a buffer below. A lane body that came whole with its head goes
// with the head instead (bufferedUpload). A small lane body that came
// after its head (many clients write the two apart), or did not fit the
// lane's buffer, used to go through net/http's Transport, with two
// goroutines of its own: 117 thousand instructions per 16 KiB POST
// (callgrind, 4 keep-alive connections) where this takes 35 thousand.
func socketUpload(out *http.Request) (*requestBody, bool) {
	a, ok := out.Body.(*attemptBody)
	if !ok {
		return nil, false
	}
	b := a.b
	if !b.spliceable() || out.URL.Scheme != "http" || out.Header["Upgrade"] != nil {
		return nil, false
	}
	if s := b.rc.(*socketBody); s.chunks != nil {
		// A chunked body goes chunked, trailers and all (see moveChunks).
		return b, out.ContentLength < 0
	}
	return b, out.ContentLength > 0
}

// RoundTrip implements http.RoundTripper.
func (f *fastH1) RoundTrip(out *http.Request) (*http.Response, error) {
	ctx := out.Context()
	le, _ := ctx.Value(laneCancelKey{}).(*laneExchange)
	var fwd forwarded // see outRequest.fwd
	if le != nil && out == &le.first.req {
		fwd = le.first.fwd
	}
	var perTry int64 // see laneExchange.perTryDue
	if le != nil {
		perTry = le.perTryDue
	}
	var buffered []byte // see bufferedUpload
	var taking *attemptBody
	var upload *requestBody // see socketUpload
	streaming := false
	if out.Body != nil {
		if taking, buffered = bufferedUpload(out, le); buffered == nil {
			upload, streaming = socketUpload(out)
		}
	}
	if perTry != 0 && (streaming || !eligible(out, le)) {
		// Proxy.try leaves the per-try bound to this client only for
		// what takes the bodiless exchange.
		return nil, errors.New("ferry: per-try deadline given for an exchange that cannot keep it")
	}
	if !streaming && buffered == nil && !eligible(out, le) {
		// net/http's Transport, whose connections put response heads
		// right (headFixConn) when roundTripInformed hands them over.
		// It writes the header as it is: what writeHead would have
		// added goes in, and Go's default User-Agent is kept out.
		if fwd.vals != nil {
			fwd.put(out.Header)
			if _, ok := out.Header["User-Agent"]; !ok {
				out.Header["User-Agent"] = nil
			}
		}
		if le != nil {
			le.escaped = true // net/http's goroutines may keep out
		}
		w, _ := informer(ctx)
		return roundTripInformed(f.fallback, out, w)
	}
	addr := out.URL.Host
	// The lane's reading of the clock as the head came, when nothing
	// waited since (see laneExchange.headAt): the first try's pooled
	// connection and response header timeout take it.
	now := le.takeHead()
	for try := 0; ; try++ {
		maxIdle := poolIdleTimeout
		if streaming {
			maxIdle = uploadReuseIdle
		}
		c, reused, err := f.get(ctx, addr, try > 0, maxIdle, now, perTry)
		if err != nil {
			return nil, err
		}
		if !reused {
			now = 0 // the dial waited
		}
		checkQuiet := reused // see rawSock.expectQuiet
		if taking != nil {
			// Taken once there is a connection that will take it: a failed
			// dial, or a pooled connection that turns out closed, leaves
			// it whole for an attempt at another endpoint.
			if reused && c.raw != nil {
				if !c.raw.quietNow() {
					c.close()
					continue // a new connection, as for errNotQuiet
				}
				checkQuiet = false // just checked
			}
			if err := takeBuffered(taking, out.ContentLength); err != nil {
				c.close()
				return nil, err
			}
			taking = nil
		}
		stop := closeOnCancel(ctx, c.tc)
		var res *http.Response
		var fresh bool
		var sent <-chan error
		early := false
		if streaming {
			res, fresh, sent, early, err = f.exchangeUpload(c, out, fwd, upload)
			if err == nil && sent == nil && le != nil {
				// The whole body went with the head, read by this round
				// trip alone, as a buffered one's (see reusable).
				le.buffered = true
			}
		} else {
			res, fresh, err = f.exchange(c, out, fwd, buffered, checkQuiet, now, perTry)
		}
		now = 0 // the exchange waited
		if err == nil {
			remaining := res.ContentLength
			if out.Method == http.MethodHead || res.StatusCode == http.StatusNoContent || res.StatusCode == http.StatusNotModified {
				remaining = -1 // no body follows, whatever Content-Length says
			}
			var sb *spliceBody
			if c.plain != nil && res == &c.plain.res {
				sb = &c.plain.sb
			} else {
				sb = new(spliceBody)
			}
			*sb = spliceBody{f: f, c: c, addr: addr, stop: stop, body: res.Body, remaining: remaining, close: res.Close || early, sent: sent, upload: upload, fields: c.fields, lane: le}
			res.Body = sb
			c.fields, c.plain = rawFields{}, nil
			return res, nil
		}
		stop.stop()
		c.close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// A pooled connection the upstream closed just now fails before
		// any response byte: try once more on a new connection, as
		// net/http does for requests that can be replayed, and for any
		// request that was not sent at all. A timeout is no such close:
		// the upstream kept the request, and a second try would wait
		// out the whole timeout again.
		if reused && !fresh && try == 0 && !streaming && (replayable(out.Method) || errors.Is(err, errNotQuiet)) &&
			!errors.Is(err, errPerTryTimeout) && !isTimeoutErr(err) {
			continue
		}
		return nil, err
	}
}

// exchangeUpload writes the request head (with what of the body came with
// it), then moves the rest of the caller's body on its own goroutine
// (spliceInto) while reading the response, so an upstream that answers
// before the body ends (an early 413, a streaming echo) is heard. sent
// delivers the body move's result. early reports an answer that came
// while some of the body was still to come from the caller: its
// connection carries no other request, whatever becomes of the body (the
// upstream may not read it all, and what it leaves would be read as the
// next request's head; net/http's Transport keeps such a connection when
// the body's write ends within 50 ms of the answer).
func (f *fastH1) exchangeUpload(c *h1Conn, out *http.Request, fwd forwarded, body *requestBody) (res *http.Response, fresh bool, sent <-chan error, early bool, err error) {
	expect := out.Header["Expect"] != nil
	sock := body.rc.(*socketBody)
	chunks := sock.chunks
	if !expect && c.raw != nil && (chunks == nil || chunks.takeInHand()) {
		// What of the body came with the head goes with it, in one
		// write (a write to a loopback upstream runs the upstream's TCP
		// input: about as costly as the copy of a few pages): a chunked
		// body only when it is at hand whole, or framed wrongly, which
		// ends the exchange before any of the head went (even one
		// longer than the writer's buffer: every write is deferred).
		c.raw.deferWrites(true)
		err := writeHead(c.bw, out, fwd)
		if err == nil && chunks != nil {
			chunkedInHand.Add(1)
			err = body.moveChunks(c.bw)
		} else if err == nil {
			err = body.sendBuffered(c.bw)
		}
		if err == nil {
			err = c.bw.Flush()
		}
		c.raw.deferWrites(false)
		if err == nil {
			body.takeNow(c.raw)
			err = c.raw.sendPending()
		}
		c.raw.dropPending()
		if err != nil {
			return nil, false, nil, false, err
		}
	} else {
		err := writeHead(c.bw, out, fwd)
		if err == nil {
			err = c.bw.Flush()
		}
		if err != nil {
			return nil, false, nil, false, err
		}
	}
	if chunks != nil {
		chunkedUp.Add(1)
	}
	if expect {
		// Ask the upstream first, as the caller asked ferry: a final
		// answer now spares the upload (the caller's connection closes
		// after it with the body unread), a 100 or a second's silence
		// lets the body go.
		res, fresh, err := f.awaitContinue(c, out)
		if err != nil || res != nil {
			return res, fresh, nil, false, err
		}
	}
	if err := sock.goAhead(); err != nil {
		return nil, false, nil, false, &bodyReadError{err}
	}
	if sock.left.Load() == 0 {
		// The whole body went with the head (takeNow): nothing to move,
		// and the exchange goes on as a bodiless one's.
		body.idle.pause()
		if f.responseHeader > 0 {
			c.awaitHeader(f.responseHeader)
		}
		res, fresh, err = f.readResponse(c, out)
		c.headerIn()
		return res, fresh, nil, false, c.headerErr(err)
	}
	// The response header timeout runs from the end of the body, as
	// net/http's Transport has it; the header may come sooner.
	var mu sync.Mutex
	headerRead := false
	done := make(chan error, 1)
	go func() {
		err := safely(func() error { return body.spliceInto(c.tc) })
		if err != nil {
			// The upstream must not take a cut body for a whole one,
			// nor wait for the rest.
			c.tc.Close()
		}
		if err == nil && f.responseHeader > 0 {
			mu.Lock()
			if !headerRead {
				c.tc.SetReadDeadline(time.Now().Add(f.responseHeader))
			}
			mu.Unlock()
		}
		done <- err
	}()
	res, fresh, err = f.readResponse(c, out)
	early = body.rc.(*socketBody).left.Load() > 0
	mu.Lock()
	headerRead = true
	c.tc.SetReadDeadline(time.Time{})
	mu.Unlock()
	if err != nil {
		// Stop the body move (closing the upstream side ends a write,
		// the caller's read deadline a wait for the caller's bytes) and
		// let its failure explain a broken connection when it was the
		// caller's.
		c.tc.Close()
		berr := body.stopSplice(done)
		var be *bodyReadError
		if errors.As(berr, &be) {
			return nil, fresh, nil, false, berr
		}
		return nil, fresh, nil, false, err
	}
	return res, fresh, done, early, nil
}

// continueTimeout is how long an upload that expects 100-continue waits for
// the upstream's interim answer before sending the body anyway, as
// net/http's Transport.ExpectContinueTimeout.
const continueTimeout = time.Second

// awaitContinue reads the upstream's answer to an Expect: 100-continue
// head: nil after a 100 or continueTimeout of silence (send the body), or
// the final response, which ends the exchange (its connection is not
// reused: the upstream may still wait for the body).
func (f *fastH1) awaitContinue(c *h1Conn, out *http.Request) (*http.Response, bool, error) {
	c.lr.N = maxResponseHeader + int64(c.br.Buffered())
	defer func() { c.lr.N = math.MaxInt64 }()
	// The wait ends continueTimeout after the head went, whatever other
	// 1xx came meanwhile (as with net/http's Transport): each answer's
	// first byte is awaited until then, never a head half read.
	due := time.Now().Add(continueTimeout)
	fresh := false
	trace := httptrace.ContextClientTrace(out.Context())
	for {
		c.tc.SetReadDeadline(due)
		_, err := c.br.Peek(1)
		c.tc.SetReadDeadline(time.Time{})
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fresh, nil
		}
		if err != nil {
			return nil, fresh, err
		}
		fresh = true
		head := prepareHead(c.br)
		res, err := http.ReadResponse(c.br, out)
		switch {
		case err != nil:
			return nil, true, headLimited(c, err)
		case res.StatusCode == http.StatusContinue:
			return nil, true, nil
		case res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols:
			head.settle(res)
			res.Close = true
			return res, true, nil
		case trace != nil && trace.Got1xxResponse != nil:
			if err := trace.Got1xxResponse(res.StatusCode, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, true, err
			}
		}
	}
}

// withoutZone drops the zone of an IPv6 endpoint ("[fe80::1%eth0]:80" ->
// "[fe80::1]:80") for a Host header, as net/http does: the zone names an
// interface of ferry's host, nothing the upstream knows.
func withoutZone(hostport string) string {
	i := strings.IndexByte(hostport, '%')
	j := strings.IndexByte(hostport, ']')
	if !strings.HasPrefix(hostport, "[") || i < 0 || j < i {
		return hostport
	}
	return hostport[:i] + hostport[j:]
}

// writeHead writes the head of a request to an HTTP/1.1 upstream: its body
// (if any, of out.ContentLength bytes) follows separately. Header order is
// the map's: HTTP gives it no meaning across different field names. The
// head is built in the writer's free space and written with one call (a
// head larger than that space is built in an allocation of its own).
//
// fwd holds the X-Forwarded-* fields when they are not in out's header (a
// lane request's first attempt, see outgoing); its zero value, none.
func writeHead(bw *bufio.Writer, out *http.Request, fwd forwarded) error {
	host := out.Host
	if host == "" {
		host = withoutZone(out.URL.Host)
	}
	b := bw.AvailableBuffer()
	b = append(b, out.Method...)
	b = append(b, ' ')
	b = appendRequestURI(b, out.URL)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, sanitizeHeaderValue(host)...)
	b = append(b, "\r\n"...)
	switch {
	case out.ContentLength > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, out.ContentLength, 10)
		b = append(b, "\r\n"...)
	case out.ContentLength < 0:
		// Only a chunked upload's (see socketUpload).
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case out.Method == http.MethodPost || out.Method == http.MethodPut || out.Method == http.MethodPatch:
		// An empty body is announced for these, as net/http does: many
		// servers expect it.
		b = append(b, "Content-Length: 0\r\n"...)
	}
	for k, vv := range out.Header {
		if headOwned(k) {
			continue
		}
		for _, v := range vv {
			b = appendField(b, k, v)
		}
	}
	b = fwd.appendTo(b)
	b = append(b, "\r\n"...)
	_, err := bw.Write(b)
	return err
}

// appendField appends the field line "k: v" CRLF, the value trimmed and
// any CR or LF in it made a space (as net/http's Header.Write does).
func appendField(b []byte, k, v string) []byte {
	b = append(b, k...)
	b = append(b, ": "...)
	if !printableASCII(v) && hasCRorLF(v) {
		v = headerValueReplacer.Replace(v)
	}
	b = append(b, textproto.TrimString(v)...)
	return append(b, "\r\n"...)
}

// appendRequestURI appends u's target in origin form, as u.RequestURI()
// would return it, without building the string.
func appendRequestURI(b []byte, u *url.URL) []byte {
	if u.Opaque != "" || u.ForceQuery {
		return append(b, u.RequestURI()...)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	b = append(b, path...)
	if u.RawQuery != "" {
		b = append(b, '?')
		b = append(b, u.RawQuery...)
	}
	return b
}

// headerValueReplacer keeps a header value on its line, as net/http's
// Header.Write does.
var headerValueReplacer = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// headOwned reports the header fields writeHead writes itself (or never).
func headOwned(k string) bool {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// hasCRorLF is strings.ContainsAny(v, "\r\n") without its set building.
func hasCRorLF(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] == '\r' || v[i] == '\n' {
			return true
		}
	}
	return false
}

func replayable(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// exchange writes the request (with body, a buffered upload's, see
// bufferedUpload) and reads the final response header, passing 1xx
// informational responses to the request's trace. fresh reports whether
// any response byte arrived. With checkQuiet (a reused connection not
// checked just now) the request goes out only if the upstream sent
// nothing since the last response: bytes that came after it (a body to a
// HEAD request, more than its Content-Length) would otherwise be read as
// this request's answer. The pool's checks (see get and
// spliceBody.nothingAfter) see only what arrived by the time they look.
//
// now is a monoNow() reading taken a moment ago, or 0 (see monoOr).
// perTry is the monoNow() time by which the attempt's response head must
// be in (timeouts.per_try), or 0.
func (f *fastH1) exchange(c *h1Conn, out *http.Request, fwd forwarded, body []byte, checkQuiet bool, now, perTry int64) (*http.Response, bool, error) {
	if perTry != 0 {
		// The head's writes count against the attempt's bound too: a
		// head longer than the writer's buffer goes out as it is built.
		c.awaitHeaderBy(perTry, true, now)
	}
	if err := writeHead(c.bw, out, fwd); err != nil {
		return nil, false, c.headNotOut(perTry, err)
	}
	// The head goes out with the first read of the response (see
	// rawSock.Read), which then waits without trying the socket first.
	// Only when nothing is buffered: that read must reach the socket.
	deferred := c.raw != nil && c.br.Buffered() == 0
	if deferred {
		c.raw.deferWrites(true)
		if checkQuiet {
			c.raw.expectQuiet()
		}
	}
	// A body the lane read whole (bufferedUpload) goes with the head: all
	// of it deferred, however much of it the writer's buffer holds.
	_, err := c.bw.Write(body)
	if err == nil {
		err = c.bw.Flush()
	}
	if deferred {
		c.raw.deferWrites(false)
	} else {
		now = 0 // the flush wrote, and may have waited
	}
	if err != nil {
		return nil, false, c.headNotOut(perTry, err)
	}
	if f.responseHeader <= 0 && perTry == 0 {
		return f.readResponse(c, out)
	}
	now = monoOr(now)
	due := int64(math.MaxInt64)
	if f.responseHeader > 0 {
		due = monoAdd(now, f.responseHeader)
	}
	per := perTry != 0 && perTry <= due
	if per {
		due = perTry
	}
	c.awaitHeaderBy(due, per, now)
	res, fresh, err := f.readResponse(c, out)
	c.headerIn()
	return res, fresh, c.headerErr(err)
}

// readResponse reads the final response header of out.
func (f *fastH1) readResponse(c *h1Conn, out *http.Request) (*http.Response, bool, error) {
	c.lr.N = maxResponseHeader + int64(c.br.Buffered())
	defer func() { c.lr.N = math.MaxInt64 }()
	if _, err := c.br.Peek(1); err != nil {
		return nil, false, timeoutAware(err)
	}
	c.fields, c.plain = rawFields{}, nil
	for {
		if pr, f := parseResponse(c.br, out); pr != nil {
			c.fields, c.plain = f, pr
			return &pr.res, true, nil
		}
		head := prepareHead(c.br)
		res, err := http.ReadResponse(c.br, out)
		if err != nil {
			return nil, true, headLimited(c, timeoutAware(err))
		}
		if res.StatusCode >= 200 || res.StatusCode == http.StatusSwitchingProtocols {
			head.settle(res)
			return res, true, nil
		}
		if res.StatusCode < 100 {
			// Not an interim answer either: relayed as one, it would
			// make WriteHeader panic.
			return nil, true, fmt.Errorf("%w %d", errBadStatus, res.StatusCode)
		}
		if w, ok := informer(out.Context()); ok {
			inform(w, res.StatusCode, res.Header)
		}
	}
}

// headLimited is err, the failure to read a response head, or
// errHeadTooLarge when the head ran into maxResponseHeader: the limit
// ends the reader's input, which the parser reports as a head cut short
// (unexpected EOF) or, cut in a status line, a malformed one.
func headLimited(c *h1Conn, err error) error {
	if c.lr.N <= 0 {
		return errHeadTooLarge
	}
	return err
}

// errHeaderTimeout is the response header timeout of the zero-copy client,
// worded like net/http's so the failure reads the same.
var errHeaderTimeout = &timeoutError{"timeout awaiting response headers"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string   { return e.msg }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }

func timeoutAware(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errHeaderTimeout
	}
	return err
}

// get takes a live idle connection to addr, or dials one (always, with
// fresh). now is a monoNow() reading taken a moment ago, or 0 (see
// monoOr); a dial ends by perTry, a monoNow() time, unless it is 0 (see
// laneExchange.perTryDue).
func (f *fastH1) get(ctx context.Context, addr string, fresh bool, maxIdle time.Duration, now, perTry int64) (*h1Conn, bool, error) {
	if !fresh {
		f.mu.Lock()
		now = monoOr(now)
		l := f.idle[addr]
		for l != nil && len(l.conns) > 0 {
			c := l.conns[len(l.conns)-1]
			idle := time.Duration(now - c.since)
			if idle >= maxIdle && maxIdle < poolIdleTimeout {
				// Too long idle for this request; the pool keeps it
				// for others (the freshest is on top: all are older).
				break
			}
			l.conns = l.conns[:len(l.conns)-1]
			// An upload's head is not sent through exchange's check
			// for bytes the upstream sent after its last response:
			// its connection is always looked at.
			upload := maxIdle < poolIdleTimeout
			if idle < poolIdleTimeout && (idle < poolTrustWindow && !upload || c.alive()) {
				c.unpark()
				f.mu.Unlock()
				return c, true, nil
			}
			c.close()
		}
		f.mu.Unlock()
	}
	dctx := ctx
	if perTry != 0 {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadlineCause(ctx, monoBase.Add(time.Duration(perTry)), errPerTryTimeout)
		defer cancel()
	}
	nc, err := f.dial(dctx, "tcp", addr)
	if err != nil {
		if dctx != ctx && ctx.Err() == nil && context.Cause(dctx) == errPerTryTimeout {
			return nil, false, fmt.Errorf("%w: %w", errPerTryTimeout, err)
		}
		return nil, false, err
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, false, errors.New("zero-copy client needs a TCP connection")
	}
	var rw io.ReadWriter = tc
	raw := newRawSock(tc)
	if raw != nil {
		rw = raw
	}
	c := &h1Conn{tc: tc, raw: raw, lr: &io.LimitedReader{R: rw}, w: rw}
	c.unpark()
	return c, false, nil
}

// An idle pooled connection gives its buffers back (park) once it has
// been idle for poolParkAfter, and takes a pair again (unpark) when the
// pool hands it out: a burst can leave poolMaxIdle connections pooled per
// endpoint, for up to poolIdleTimeout, which kept 36 KiB each. (ferry
// run's idle trim waits longer than poolSweepInterval+poolParkAfter after
// traffic stops, so that these are parked before it collects: see
// trimQuietIntervals in cmd/ferry.)
const (
	poolParkAfter             = time.Second
	upReadBuf, upWriteBuf int = 32 << 10, 4 << 10
)

var (
	upReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, upReadBuf) }}
	upWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, upWriteBuf) }}
)

// park returns the connection's buffers to their pools when they hold
// nothing (a buffered byte would be a stray response: alive says no to
// such a connection, which is closed). f.mu is held, the connection idle
// in the pool.
func (c *h1Conn) park() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		upReaders.Put(c.br)
		c.br = nil
	}
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.bw.Reset(nil)
		upWriters.Put(c.bw)
		c.bw = nil
	}
	if c.raw != nil {
		// The deferred bytes of the last head, and of a body sent with
		// it (up to the lane's 8 KiB), need not stay with an idle
		// connection either.
		c.raw.pend = nil
	}
}

// unpark gives the connection buffers again where park took them.
func (c *h1Conn) unpark() {
	if c.br == nil {
		c.br = upReaders.Get().(*bufio.Reader)
		c.br.Reset(c.lr)
	}
	if c.bw == nil {
		c.bw = upWriters.Get().(*bufio.Writer)
		c.bw.Reset(c.w)
	}
}

// alive reports whether an idle connection can carry a request: nothing
// arrived on it since its last response (no stray bytes, no close from the
// upstream). It peeks at the socket without waiting.
func (c *h1Conn) alive() bool {
	if c.br != nil && c.br.Buffered() > 0 {
		return false
	}
	// Nothing to read yet is the only healthy answer; 0 bytes is the
	// upstream's close, data is a stray response.
	st, err := peekSocket(c.tc)
	return err == nil && st == peekEmpty
}

// What a socket holds, seen without reading it.
type peekState int

const (
	peekEmpty  peekState = iota // open, nothing to read yet
	peekData                    // bytes waiting
	peekClosed                  // the peer closed (end of stream) or the socket failed
)

// sweep closes idle connections that expired or that the upstream closed,
// so a quiet ferry keeps no half-closed sockets. It re-arms itself while
// connections are pooled.
func (f *fastH1) sweep() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweeping = false
	n := 0
	now := monoNow()
	for addr, l := range f.idle {
		keep := l.conns[:0]
		for _, c := range l.conns {
			if idle := time.Duration(now - c.since); idle < poolIdleTimeout && (idle < poolTrustWindow || c.alive()) {
				if idle >= poolParkAfter {
					c.park()
				}
				keep = append(keep, c)
			} else {
				c.close()
			}
		}
		l.conns = keep
		if len(keep) == 0 {
			l.gone = true
			delete(f.idle, addr)
		}
		n += len(keep)
	}
	if n > 0 && !f.closed {
		f.sweeping = true
		time.AfterFunc(poolSweepInterval, f.sweep)
	}
}

// put returns a connection whose last response was read to its end. now
// is a monoNow() reading taken a moment ago, or 0 (see monoOr). The
// connection's list is looked up by addr only when it has none that is
// still the pool's.
func (f *fastH1) put(addr string, c *h1Conn, now int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.close()
		return
	}
	l := c.home
	if l == nil || l.gone {
		if l = f.idle[addr]; l == nil {
			if f.idle == nil {
				f.idle = map[string]*idleList{}
			}
			l = &idleList{}
			f.idle[addr] = l
		}
		c.home = l
	}
	if len(l.conns) >= poolMaxIdle {
		c.close()
		return
	}
	c.since = monoOr(now)
	l.conns = append(l.conns, c)
	if !f.sweeping {
		f.sweeping = true
		time.AfterFunc(poolSweepInterval, f.sweep)
	}
}

// CloseIdleConnections closes pooled connections of both clients; it is
// called when a generation is retired, so connections returned afterwards
// are closed rather than pooled.
func (f *fastH1) CloseIdleConnections() {
	f.mu.Lock()
	for _, l := range f.idle {
		for _, c := range l.conns {
			c.close()
		}
		l.gone = true
	}
	f.idle = nil
	f.closed = true // the generation is retired: later returns close
	f.mu.Unlock()
	f.fallback.CloseIdleConnections()
}

// spliceBody is a response body of the zero-copy client. Read serves it
// through the buffered reader like any body; spliceTo moves what is left
// of a Content-Length body from the upstream socket straight into the
// caller's socket.
type spliceBody struct {
	f         *fastH1
	c         *h1Conn
	addr      string
	stop      cancelHook // unregisters the cancel-closes-conn hook
	body      io.ReadCloser
	remaining int64 // Content-Length, -1 when unknown
	close     bool  // the upstream asked to close after this response
	eof       bool
	done      bool
	bySplice  bool         // spliceTo moved the body's end socket to socket
	sent      <-chan error // the result of an upload's move (socketUpload), until received; nil for other requests
	upload    *requestBody // that upload's body; nil for other requests
	// lane is the lane exchange of the request, whose reading of the
	// clock as the response went out (doneAt) dates the connection's
	// return to the pool; nil for another request's.
	lane *laneExchange
	// fields: the response's header lines, when it has no Header map (see
	// rawFields and Proxy.respond).
	fields rawFields
}

func (b *spliceBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close returns the connection to the pool when the body was read to its
// end, else closes it.
func (b *spliceBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	// stop reports false when the request's context already ended and its
	// hook is closing the connection: such a connection never goes back
	// to the pool.
	if b.stop.stop() && b.eof && !b.close && b.uploaded() && b.nothingAfter() {
		var now int64
		if at := b.lane.doneTime(); !at.IsZero() {
			now = monoOf(at) // (set for a bodiless request only: nothing above waited)
		}
		b.f.put(b.addr, b.c, now)
		return nil
	}
	err := b.c.close()
	b.awaitUpload()
	return err
}

// awaitUpload returns once an upload's body move (socketUpload), which
// may still run when the response ended first (the upstream answered
// before taking the whole body, or said "Connection: close", or the move
// was slow to report), has ended. The move feeds the exchange's idle
// timer, which on a lane connection is the connection's: once this
// exchange ended, it watches the connection's next request, which a late
// touch or pause would blind. The upstream connection is closed by now, which ends a write in
// progress; the caller's read deadline in the past ends a wait for the
// caller's bytes (the caller's connection does not carry another request
// then: its body was not read whole).
func (b *spliceBody) awaitUpload() {
	if b.sent == nil {
		return
	}
	select {
	case <-b.sent:
	default:
		if testHookAwaitMove != nil {
			testHookAwaitMove()
		}
		b.upload.stopSplice(b.sent)
	}
	b.sent = nil
}

// nothingAfter reports that the upstream sent nothing past the response:
// bytes after it would be read as the answer to the connection's next
// request, which may be another caller's. What came with the response is
// in the buffer; after a body moved socket to socket the socket is looked
// at too (a pooled connection is not looked at again when it is taken
// soon after, see fastH1.get).
func (b *spliceBody) nothingAfter() bool {
	if b.bySplice {
		return b.c.alive()
	}
	return b.c.br.Buffered() == 0
}

// uploaded reports whether the request body (if any) went whole: only
// then may the connection carry another request.
func (b *spliceBody) uploaded() bool {
	if b.sent == nil {
		return true
	}
	select {
	case err := <-b.sent:
		b.sent = nil
		return err == nil
	default:
	}
	// The upstream answered as the last body bytes went: give the move a
	// moment to report (if it does not, Close waits for it after closing
	// the connection).
	t := time.NewTimer(50 * time.Millisecond)
	defer t.Stop()
	select {
	case err := <-b.sent:
		b.sent = nil
		return err == nil
	case <-t.C:
		return false
	}
}

// awaitFirst waits for the body's first byte (or the upstream's end),
// reading nothing of it: it returns an error only when the body broke
// before its first byte.
func (b *spliceBody) awaitFirst() error {
	if b.c.br.Buffered() > 0 {
		return nil
	}
	_, err := b.c.br.Peek(1)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF // the upstream closed before its Content-Length
	}
	return err
}

// errSplice wraps an error of a kernel-to-kernel move, which cannot tell
// whether the upstream or the caller side failed.
type errSplice struct{ err error }

func (e *errSplice) Error() string { return "zero-copy relay: " + e.err.Error() }
func (e *errSplice) Unwrap() error { return e.err }

// spliceTo relays the body to w kernel to kernel when it can: a body of
// known length of at least spliceMin still to come, and a w that can read
// from a socket. dst is w's socket (nil when not known), which the idle
// timer watches with the upstream's. It reports false when it did nothing.
func (b *spliceBody) spliceTo(w http.ResponseWriter, dst *net.TCPConn, idle *idleTimer) (relayResult, bool) {
	rf, ok := w.(io.ReaderFrom)
	if !ok || b.remaining < spliceMin {
		return relayResult{}, false
	}
	var res relayResult
	// Bytes already read into the buffer go first.
	if n := b.c.br.Buffered(); n > 0 {
		buf, _ := b.c.br.Peek(int(min(int64(n), b.remaining)))
		nw, err := w.Write(buf)
		b.c.br.Discard(nw)
		res.n += int64(nw)
		if err != nil {
			res.writeErr = err
			return res, true
		}
	}
	left := b.remaining - res.n
	b.bySplice = left > 0
	if left > 0 {
		idle.watchMove(moveDown, b.c.tc, dst)
		defer idle.unwatchMove(moveDown)
	}
	for left > 0 {
		seg := min(left, spliceSegment)
		n, err := rf.ReadFrom(&io.LimitedReader{R: b.c.tc, N: seg})
		res.n += n
		left -= n
		spliced.Add(n)
		idle.touch()
		switch {
		case err != nil:
			// A move fails on either side. An upstream socket still
			// open (its bytes waiting, or none yet) did not break: the
			// caller's side did (it went away, or a cut of its writes),
			// which is no failure of the endpoint's.
			if st, perr := peekSocket(b.c.tc); perr == nil && st != peekClosed {
				res.writeErr = &errSplice{err}
			} else {
				res.readErr = &errSplice{err}
			}
			return res, true
		case n < seg:
			res.readErr = io.ErrUnexpectedEOF // the upstream closed early
			return res, true
		}
	}
	b.eof = true
	return res, true
}
