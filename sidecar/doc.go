// Package sidecar is ferry's data plane: the outbound listener the local
// application calls upstreams through, the inbound listener the mesh calls
// the application through, the admin listener, routing, and the HTTP relay
// that streams every body as it arrives without holding it in memory.
//
// It owns the config file as a whole and composes discovery (endpoints),
// resilience (picks and breakers) and telemetry (spans, metrics, logs)
// through small interfaces. It does not find endpoints itself.
//
// # The path of one request
//
// Each file opens with the why of its part; this is the map.
//
//  1. The caller's connection is accepted by the lane (lane.go), ferry's
//     own HTTP/1.1 server for the plainest requests. It reads the head into
//     a pooled buffer and, only when every byte of it is of a kind it
//     understands, builds the request itself (parseHead) and answers
//     through connWriter. Anything else (h2c, upgrades, Expect, chunked or
//     unusual framing, HTTP/1.0, large or malformed heads) is handed, with
//     the bytes read so far, to net/http's server, which serves that
//     connection to its end; framingScan watches what net/http reads there
//     for a request framed two ways, or an HTTP/1.0 one with
//     Transfer-Encoding (faulty framing, RFC 9112 section 6.1).
//  2. Proxy.ServeHTTP (proxy.go) starts the server span, metrics and access
//     log of the exchange (observe.go), refuses what must not be relayed,
//     and matches a route in the generation in force (routes.go, state.go).
//  3. forward takes the service's discovery snapshot, makes the exchange's
//     context (a lane request brings its own, cancelled with a cause), its
//     timeouts (timers.go: runtime timers that are only moved earlier, so a
//     busy connection arms none per request) and, for a request body,
//     requestBody (stream.go), which counts bytes, enforces the limit and
//     gives each attempt its own hold that is retired before a retry.
//  4. The resilience.Upstream of the service picks an endpoint among those
//     whose breaker admits a request (upstream.go: only the generation in
//     force feeds a balancer across reloads). try makes one attempt: a
//     client span, a new trace context whose parent is that span, and the
//     outgoing request with hop-by-hop fields removed and X-Forwarded-*
//     set (headers.go). A failure is classified (errors.go), reported to
//     the breaker and retried on another endpoint when the policy, the
//     budget and the body allow. A failure ferry answers itself goes
//     through exchange.fail: a status with the reason in text/plain and
//     X-Ferry-Error (errors.go), or, to a gRPC call, a trailers-only gRPC
//     answer with the reason in grpc-message (grpcfailure.go), and to a
//     gRPC-Web call, over any HTTP version, a trailers-only gRPC-Web
//     answer of its own Content-Type (grpcweb.go).
//  5. A bodiless request to a plain-TCP HTTP/1.1 upstream goes through
//     fastH1 (splice.go), ferry's own small client and connection pool; it
//     reads the plainest response heads itself (response.go) and hands a
//     Content-Length body over as the socket, so a large body moves kernel
//     to kernel with splice(2). Requests with bodies, h2c and everything
//     else go through net/http's transports (upstream.go). A large upload
//     takes the caller's connection over and splices the body upstream
//     (takeover.go). Both hot paths read and write their sockets with
//     rawSock (rawio.go). On either client, a response head that
//     net/http's reader would read wrongly for a proxy (fields its
//     Connection named, framed two ways, forbidden trailers announced) is
//     put right before that reader reads it (headfix.go).
//  6. respond relays the status, header, body and trailers: a plain head
//     to an HTTP/1.1 caller goes on as it came; a body streams through one
//     pooled buffer (stream.go's relay), flushed after every write so each
//     piece reaches the caller as it came (event streams, gRPC messages),
//     or, on the zero-copy path, is spliced; the idle timer guards both
//     directions.
//     A Content-Length body's head goes out with its first bytes, which
//     are awaited before the head is written: a body that breaks before
//     them leaves nothing sent, so the attempt is retried on another
//     endpoint when the policy would retry one that broke before its head;
//     else the caller gets a whole 502 (504 when a timeout ended the wait).
//     A body that breaks later is never ended cleanly: the handler panics
//     with http.ErrAbortHandler and the caller sees a connection closed
//     short or a reset stream (an HTTP/1.0 caller, whose body may end
//     where its connection does, a reset connection: resetCaller); but a
//     gRPC response that broke between two messages ends with a gRPC
//     status in trailers (grpcframes.go). 101 Switching Protocols becomes a tunnel
//     (upgrade.go).
//  7. At the last byte, or the first error, exchange.end reports the
//     breaker outcome, ends the spans and writes the metrics and the
//     access log line.
//
// Sidecar (sidecar.go) runs the listeners, registration and the drain on
// shutdown; Reload (reload.go) builds a whole new generation and swaps it
// in, keeping the one in force when the new one is invalid or does not
// resolve (a config file's content that did not resolve is tried again,
// with backoff, while the file holds it).
package sidecar
