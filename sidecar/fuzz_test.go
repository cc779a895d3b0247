package sidecar

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/ferrymesh/ferry/internal/routematch"
)

// Fuzz targets for the input ferry takes from outside: its config file,
// the Host and path requests are routed by, and the headers it forwards.
// Seeds live in testdata/fuzz/<FuzzName>/ (run as regression cases by a
// plain `go test`); scripts/fuzz.sh runs every target for a while.

// FuzzParseConfig: any bytes either load or fail with ConfigErrors, never a
// panic; a config that loads prints (as admin /config prints it) to YAML
// that loads again into the same config, token aside (printed redacted).
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"outbound: { routes: [ { service: a } ] }\nservices: { a: { endpoints: ['127.0.0.1:8080'] } }\n",
		"inbound: { app: 127.0.0.1:8080 }\n",
		"admin: { listen: 127.0.0.1:0 }\ninbound: { listen: 127.0.0.1:0, app: 'app:80', protocol: h2c }\nlimits: { max_request_body_bytes: 1048576, read_header_timeout: 1s }\n",
		"outbound:\n  routes:\n    - { host: api.example, path_prefix: /v1/, service: api }\n    - { service: web }\nservices:\n  api: { endpoints: ['10.0.0.1:80', '10.0.0.2:80'], protocol: http1 }\n  web:\nconsul: { address: 127.0.0.1:8500, token: s3cr3t }\n",
		"a: &x [*x]\n",
		"outbound: { routes: [ { service: a } ] }\nservices: { a: { endpoints: [] } }\nshutdown: { grace: 1s, delay: 100ms }\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			var ce ConfigErrors
			if !errorsAs(err, &ce) || len(ce) == 0 {
				t.Fatalf("error is not ConfigErrors with entries: %T %v", err, err)
			}
			return
		}
		if cfg.Outbound == nil && cfg.Inbound == nil {
			t.Fatal("loaded a config with neither outbound nor inbound")
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("printing a loaded config: %v", err)
		}
		again, err := ParseConfig(out)
		if err != nil {
			t.Fatalf("the printed config does not load: %v\n--- input\n%s\n--- printed\n%s", err, data, out)
		}
		want := normalizeForRoundTrip(cfg)
		if diff := configDiff(reflect.ValueOf(want), reflect.ValueOf(again), "config"); diff != "" {
			t.Fatalf("printed config loads differently at %s\n--- input\n%s\n--- printed\n%s", diff, data, out)
		}
	})
}

// configDiff returns the path of the first difference between two configs,
// or "". Empty and nil maps and slices are the same, except a service's
// endpoints, where nil means Consul and empty means no endpoints.
func configDiff(a, b reflect.Value, path string) string {
	if a.Kind() != b.Kind() {
		return path
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return path
			}
			return ""
		}
		return configDiff(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if d := configDiff(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); d != "" {
				return d
			}
		}
		return ""
	case reflect.Slice:
		if strings.HasSuffix(path, ".Endpoints") && a.IsNil() != b.IsNil() {
			return path + " (nil vs empty)"
		}
		if a.Len() != b.Len() {
			return path
		}
		for i := range a.Len() {
			if d := configDiff(a.Index(i), b.Index(i), path+"["+strconv.Itoa(i)+"]"); d != "" {
				return d
			}
		}
		return ""
	case reflect.Map:
		if a.Len() != b.Len() {
			return path
		}
		for _, k := range a.MapKeys() {
			bv := b.MapIndex(k)
			if !bv.IsValid() {
				return path + "[" + k.String() + "] missing"
			}
			if d := configDiff(a.MapIndex(k), bv, path+"["+k.String()+"]"); d != "" {
				return d
			}
		}
		return ""
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			return path
		}
		return ""
	}
}

func errorsAs(err error, target *ConfigErrors) bool {
	ce, ok := err.(ConfigErrors)
	if ok {
		*target = ce
	}
	return ok
}

// normalizeForRoundTrip returns cfg as it should load after printing: with
// the Consul token redacted.
func normalizeForRoundTrip(cfg *Config) *Config {
	c := *cfg
	if cfg.Consul != nil {
		cc := *cfg.Consul
		if cc.Token != "" {
			cc.Token = "[redacted]"
		}
		c.Consul = &cc
	}
	return &c
}

// sameHost is the route's notion of "this Host header names me": the
// same name ignoring case, or for an IP route the same address however it
// is spelled ("[::01]" is "::1").
func sameHost(r *route, reqHost string) bool {
	h := hostOnly(reqHost)
	if r.ip.IsValid() {
		a, err := netip.ParseAddr(h)
		return err == nil && a == r.ip
	}
	return strings.EqualFold(r.host, h)
}

// FuzzRouteMatch: whatever the configured route and the request's Host and
// path, a match honours the route's host (port and trailing dot ignored,
// case-insensitive) and its prefix at a segment boundary; the first route
// that matches wins; and a request for exactly the configured host (with
// any port) and a path under the prefix reaches the route.
func FuzzRouteMatch(f *testing.F) {
	f.Add("api.example", "/v1", "api.example:8080", "/v1/users", uint16(8080))
	f.Add("API.Example.", "/v1/", "api.example", "/v1", uint16(80))
	f.Add("", "/", "x", "/", uint16(1))
	f.Add("a", "/v1", "a", "/v10", uint16(443))
	f.Add("[::1]", "", "[::1]:80", "/", uint16(80))
	f.Add("::1", "/", "[::1]:80", "/", uint16(80))
	f.Add("10.0.0.1", "/a/b", "10.0.0.1:1", "/a/b/c", uint16(1))
	f.Fuzz(func(t *testing.T, host, prefix, reqHost, reqPath string, port uint16) {
		yamlText := "admin: { listen: 127.0.0.1:0 }\noutbound:\n  listen: 127.0.0.1:0\n  routes:\n" +
			"    - { host: " + strconv.Quote(host) + ", path_prefix: " + strconv.Quote(prefix) + ", service: first }\n" +
			"    - { path_prefix: /, service: second }\n" +
			"services:\n  first: { endpoints: ['127.0.0.1:1'] }\n  second: { endpoints: ['127.0.0.1:2'] }\n"
		if !utf8.ValidString(host) || !utf8.ValidString(prefix) {
			return // YAML text is UTF-8
		}
		cfg, err := ParseConfig([]byte(yamlText))
		if err != nil {
			return // invalid routes are the config fuzzer's business
		}
		sc, err := New(cfg, Options{})
		if err != nil {
			t.Fatalf("new: %v", err)
		}
		defer sc.Shutdown(context.Background())
		table := sc.state.Load().outbound
		r := table.match(reqHost, reqPath)
		if r == nil {
			if strings.HasPrefix(reqPath, "/") {
				t.Fatalf("a path under / matched no route: host %q path %q", reqHost, reqPath)
			}
		} else {
			if r.host != "" && !sameHost(r, reqHost) {
				t.Fatalf("route %s (host %q) matched Host %q", r.name, r.host, reqHost)
			}
			if r.prefix != "" && reqPath != r.prefix && !strings.HasPrefix(reqPath, r.prefix+"/") {
				t.Fatalf("route %s (prefix %q) matched path %q", r.name, r.prefix, reqPath)
			}
			if r.name != "routes[0]" {
				first := &table.routes[0]
				hostOK := first.host == "" || sameHost(first, reqHost)
				if hostOK && (first.prefix == "" || routematch.PathHasPrefix(reqPath, first.prefix)) {
					t.Fatalf("routes[0] matches host %q path %q but %s won", reqHost, reqPath, r.name)
				}
			}
		}
		// The configured host itself, with a port, reaches routes[0].
		if host == "" {
			return
		}
		bare := strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(host, "["), "."), "]")
		if _, err := netip.ParseAddr(bare); err != nil && !isHostName(bare) {
			return // not a host name nor an IP literal ("[", "h:80"): nothing to reach
		}
		if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		}
		target := net.JoinHostPort(bare, strconv.Itoa(int(port)))
		path := strings.TrimSuffix(prefix, "/") + "/x"
		if got := table.match(target, path); got == nil || got.name != "routes[0]" {
			name := "nothing"
			if got != nil {
				name = got.name
			}
			t.Fatalf("route host %q prefix %q: request Host %q path %q matched %s, want routes[0] (compiled host %q)", host, prefix, target, path, name, table.routes[0].host)
		}
	})
}

// isHostName reports a DNS-style name: letters, digits, '-', '_' and '.'
// (any letter, so internationalised names in Unicode form count).
func isHostName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// FuzzHeaders: removeHopHeaders leaves no hop-by-hop header and none the
// Connection header names, keeps "TE: trailers" on requests only, and
// touches nothing else; upgradeType only reports an upgrade the Connection
// header asks for; setForwarded appends the caller's address and sets the
// protocol; sanitizeHeaderValue leaves no control character.
func FuzzHeaders(f *testing.F) {
	f.Add("Connection: keep-alive, X-Secret\nX-Secret: s\nKeep-Alive: 5\nX-Keep: k", true, "10.1.2.3:5555", "svc.example")
	f.Add("TE: trailers, gzip\nConnection: te", true, "127.0.0.1:1", "")
	f.Add("TE: Trailers;q=0.5\nUpgrade: websocket\nConnection: Upgrade", true, "[::1]:80", "h")
	f.Add("Transfer-Encoding: chunked\nTrailer: X-T\nProxy-Authorization: Basic x\nX-Forwarded-For: 1.1.1.1, 2.2.2.2", false, "bad-addr", "h:80")
	f.Add("Connection: ,,  ,\tUpgrade , close\nUpgrade: h2c", true, "1.2.3.4:5", "x")
	f.Add("X-A: a\r\nb\nx-a: c\x00", false, "1.2.3.4:5", "x")
	f.Fuzz(func(t *testing.T, raw string, isRequest bool, remote, host string) {
		h := http.Header{}
		for line := range strings.SplitSeq(raw, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || k == "" {
				continue
			}
			h.Add(k, strings.TrimSpace(v))
		}
		orig := h.Clone()

		if up := upgradeType(orig); up != "" && (!headerHasToken(orig, "Connection", "upgrade") || up != orig.Get("Upgrade")) {
			t.Fatalf("upgradeType %q for %v", up, orig)
		}
		if up := requestUpgrade(orig); up != "" {
			if !headerHasToken(orig, "Connection", "upgrade") {
				t.Fatalf("requestUpgrade %q without Connection: upgrade in %v", up, orig)
			}
			// Only protocols the first Upgrade header offers, never h2c.
			offeredTokens := map[string]bool{}
			for tok := range strings.SplitSeq(orig.Get("Upgrade"), ",") {
				offeredTokens[strings.ToLower(strings.TrimSpace(tok))] = true
			}
			for tok := range strings.SplitSeq(up, ",") {
				tok = strings.ToLower(strings.TrimSpace(tok))
				if tok == "h2c" {
					t.Fatalf("requestUpgrade %q offers h2c through the proxy", up)
				}
				if !offeredTokens[tok] {
					t.Fatalf("requestUpgrade %q: %q is not in Upgrade %q", up, tok, orig.Get("Upgrade"))
				}
			}
		}

		nominated := map[string]bool{}
		for _, v := range orig["Connection"] {
			for name := range strings.SplitSeq(v, ",") {
				if name = strings.TrimSpace(name); name != "" {
					nominated[http.CanonicalHeaderKey(name)] = true
				}
			}
		}
		removeHopHeaders(h, isRequest)
		hop := map[string]bool{}
		for _, k := range hopHeaders {
			hop[k] = true
		}
		for k, vv := range h {
			switch {
			case k == "Te":
				// ferry's own TE to the upstream, named in Connection or
				// not (RFC 9110 section 10.1.4 has senders name it).
				if !isRequest || len(vv) != 1 || vv[0] != "trailers" {
					t.Fatalf("TE left as %q (request %v) from %v", vv, isRequest, orig)
				}
			case hop[k]:
				t.Fatalf("hop-by-hop %s left: %q", k, vv)
			case nominated[k]:
				t.Fatalf("%s left though Connection names it: %v", k, orig)
			case !reflect.DeepEqual(vv, orig[k]):
				t.Fatalf("%s changed from %q to %q", k, orig[k], vv)
			}
		}
		if isRequest && teTrailers(orig) && h["Te"] == nil {
			t.Fatalf("a request's TE: trailers dropped: %v", orig)
		}
		for k := range orig {
			if _, kept := h[k]; !kept && !hop[k] && !nominated[k] {
				t.Fatalf("end-to-end header %s dropped", k)
			}
		}
		if isRequest && !nominated["Te"] && teTrailers(orig) && h.Get("Te") != "trailers" {
			t.Fatalf("TE: trailers dropped from %v", orig)
		}

		r := &http.Request{RemoteAddr: remote, Host: host, Header: orig}
		prior := append([]string(nil), h["X-Forwarded-For"]...)
		h2 := h.Clone()
		setForwarded(h, r, nil, nil, nil)
		// As a lane connection does it: its caller's address worked
		// out once.
		caller := callerOf(remote)
		setForwarded(h2, r, nil, &caller, nil)
		if !reflect.DeepEqual(h, h2) {
			t.Fatalf("remote %q: with the caller's address worked out before, %v; without, %v", remote, h2, h)
		}
		if ip, _, err := net.SplitHostPort(remote); err == nil {
			ip, _, _ = strings.Cut(ip, "%") // a zone is local to ferry's host: not sent
			xff := h["X-Forwarded-For"]
			if len(xff) != 1 || !strings.HasSuffix(xff[0], ip) {
				t.Fatalf("X-Forwarded-For %q, want it to end with %q", xff, ip)
			}
			if len(prior) > 0 && !strings.HasPrefix(xff[0], strings.Join(prior, ", ")+", ") {
				t.Fatalf("X-Forwarded-For %q lost the prior list %q", xff, prior)
			}
		} else if !reflect.DeepEqual(h["X-Forwarded-For"], orig["X-Forwarded-For"]) && len(prior) > 0 {
			t.Fatalf("X-Forwarded-For changed without a caller address: %q", h["X-Forwarded-For"])
		}
		if got := h["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "http" {
			t.Fatalf("X-Forwarded-Proto %q", got)
		}
		if host != "" {
			if got := h["X-Forwarded-Host"]; len(got) != 1 || got[0] != host {
				t.Fatalf("X-Forwarded-Host %q, want %q", got, host)
			}
		}

		clean := sanitizeHeaderValue(raw)
		if strings.ContainsFunc(clean, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("sanitizeHeaderValue left a control character: %q", clean)
		}
		if utf8.RuneCountInString(clean) != utf8.RuneCountInString(raw) {
			t.Fatalf("sanitizeHeaderValue changed the length: %q -> %q", raw, clean)
		}
	})
}

// FuzzProxyFraming sends arbitrary bytes to the outbound listener as one
// HTTP/1.x connection and compares what the upstream
// received with a reference: the requests net/http's own parser finds in
// those bytes, read in order and stopping at the first malformed request or
// body. Every complete request at the upstream must be one of those, in the
// same order, with the same method, target and body; ferry may answer some
// itself (CONNECT, OPTIONS *, a refused request) and send fewer, never more
// or other ones: that would be a request smuggled past the framing.
func FuzzProxyFraming(f *testing.F) {
	const h = "Host: a\r\n"
	for _, s := range []string{
		"GET / HTTP/1.1\r\n" + h + "\r\n",
		"GET /1 HTTP/1.1\r\n" + h + "\r\nPOST /2 HTTP/1.1\r\n" + h + "Content-Length: 3\r\n\r\nabcGET /3?q HTTP/1.1\r\n" + h + "\r\n",
		"POST /p HTTP/1.1\r\n" + h + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGPOST\r\n0\r\n\r\nGET /x HTTP/1.1\r\n" + h + "\r\n",
		"POST /p HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
		"POST /p HTTP/1.1\r\n" + h + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcGET /smuggled HTTP/1.1\r\n" + h + "\r\n",
		"GET http://b/abs HTTP/1.1\r\n" + h + "\r\nGET /a#f HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
		"GET /p HTTP/1.1\n" + h + "X: a\r\n b\r\n\r\nOPTIONS * HTTP/1.1\r\n" + h + "\r\nCONNECT a:1 HTTP/1.1\r\n" + h + "\r\n",
		"POST /p HTTP/1.1\r\n" + h + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabcPOST /q HTTP/1.1\r\n" + h + "Content-Length: 10\r\n\r\nshort",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if bytes.HasPrefix(data, []byte("PRI * HTTP/2.0")) {
			return // the connection turns HTTP/2: another protocol
		}
		ref, refStop := referenceRequests(data)
		o := startRecOrigin(t)
		sc := ferryBoth(t, o.addr(), "")
		c, err := net.Dial("tcp", sc.Addr("outbound"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		go c.Write(data)
		// Read an answer per request the input holds, so none is still
		// in flight, then half-close: the end of input is the end of a
		// partial request, if any.
		br := bufio.NewReader(c)
		answers := len(ref)
		if refStop == "truncated body" {
			answers-- // ferry waits for the rest of that body
		}
		// Should ferry wait where the reference saw a complete request,
		// stop waiting after a while: the end of input settles it.
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for n := 0; n < answers; {
			res, err := http.ReadResponse(br, &http.Request{Method: ref[n].method})
			if err != nil {
				break // ferry closed the connection early
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode >= 200 {
				n++
			}
		}
		if strings.HasPrefix(refStop, "body: ") {
			// After a malformed body nothing on the connection can be
			// framed: ferry must answer it and close, never answer more.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if res, err := http.ReadResponse(br, nil); err == nil {
				res.Body.Close()
				t.Fatalf("ferry answered %d past a malformed body (%s)\ninput %q", res.StatusCode, refStop, data)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(br); err != nil && !isClosedErr(err) {
			t.Fatalf("reading ferry's answers: %v\ninput %q", err, data)
		}
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sc.Shutdown(ctx); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		o.close()
		i, matched := 0, 0
		for _, got := range o.requests() {
			if got.err != "" {
				t.Fatalf("upstream received bytes that are not a request: %s\ninput %q", got.err, data)
			}
			if !got.complete {
				continue
			}
			for i < len(ref) && !ref[i].matches(got) {
				i++
			}
			if i == len(ref) {
				t.Fatalf("upstream got %v, which is not among the requests the input holds (in order): %v (parse stopped: %s)\ninput %q", got, ref, refStop, data)
			}
			i++
			matched++
		}
		if testing.Verbose() {
			t.Logf("%d requests in the input, %d reached the upstream", len(ref), matched)
		}
	})
}

// refReq is a request as net/http parses it, keyed the way the upstream
// sees it.
type refReq struct{ method, target, body string }

func (r refReq) matches(g recReq) bool {
	return r.method == g.method && r.target == g.uri && r.body == g.body
}

// referenceRequests parses data as a sequence of HTTP/1.x requests the way
// a server must: in order, stopping at the first malformed request or body
// (stop says why: "head: ...", "body: ...", "truncated body" when the input
// ends inside a body, "" at a clean end).
func referenceRequests(data []byte) (reqs []refReq, stop string) {
	br := bufio.NewReader(bytes.NewReader(data))
	for {
		if n := len(reqs); n > 0 && reqs[n-1].method == http.MethodPost {
			// As net/http's server (and ferry's lane): up to 4 CR or LF
			// bytes after a POST are skipped, a lone CR too, for old
			// clients that end a body with a CRLF.
			peek, _ := br.Peek(4)
			skip := 0
			for skip < len(peek) && (peek[skip] == '\r' || peek[skip] == '\n') {
				skip++
			}
			br.Discard(skip)
		}
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return reqs, ""
			}
			return reqs, "head: " + err.Error()
		}
		body, err := io.ReadAll(req.Body)
		// The target as the caller wrote it, "?" of an empty query too.
		u := url.URL{Path: req.URL.Path, RawPath: req.URL.RawPath, RawQuery: req.URL.RawQuery, ForceQuery: req.URL.ForceQuery}
		reqs = append(reqs, refReq{req.Method, u.RequestURI(), string(body)})
		switch {
		case errors.Is(err, io.ErrUnexpectedEOF) || (err != nil && strings.Contains(err.Error(), "unexpected EOF")):
			return reqs, "truncated body" // includes a trailer cut short
		case err != nil:
			return reqs, "body: " + err.Error()
		}
	}
}
