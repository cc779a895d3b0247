package sidecar

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// WebSocket over HTTP/2 (RFC 8441's extended CONNECT) is not supported:
// ferry's listeners do not offer SETTINGS_ENABLE_CONNECT_PROTOCOL, and a
// caller that sends :protocol anyway gets its stream reset (PROTOCOL_ERROR),
// as RFC 9113 has a request with an unknown pseudo-header treated. A plain
// CONNECT gets ferry's 405. Both answers come at once, nothing reaches the
// upstream, and the connection goes on carrying requests.
func TestH2CConnectRefused(t *testing.T) {
	leakCheck(t)
	for _, listener := range []string{"outbound", "inbound"} {
		t.Run(listener, func(t *testing.T) {
			o := startRecOrigin(t)
			sc := ferryBoth(t, o.addr(), "")
			c, err := net.Dial("tcp", sc.Addr(listener))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.Write([]byte(http2.ClientPreface))
			fr := http2.NewFramer(c, c)
			fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
			fr.WriteSettings()
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			settings, ok := f.(*http2.SettingsFrame)
			if !ok || settings.IsAck() {
				t.Fatalf("first frame %v, want the server's SETTINGS", f)
			}
			if v, ok := settings.Value(http2.SettingEnableConnectProtocol); ok && v != 0 {
				t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL %d offered; WebSocket over HTTP/2 is not supported", v)
			}
			fr.WriteSettingsAck()
			send := func(id uint32, fields ...string) {
				var block bytes.Buffer
				enc := hpack.NewEncoder(&block)
				for i := 0; i < len(fields); i += 2 {
					enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
				}
				if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: id == 5, EndHeaders: true}); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			send(1, ":method", "CONNECT", ":protocol", "websocket", ":scheme", "http", ":path", "/chat", ":authority", "svc.example",
				"sec-websocket-version", "13")
			send(3, ":method", "CONNECT", ":authority", "svc.example:443")
			send(5, ":method", "GET", ":scheme", "http", ":path", "/after", ":authority", "svc.example")
			got := map[uint32]string{}
			bodies := map[uint32]string{}
			for len(got) < 3 {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading frames: %v (so far %v)", err, got)
				}
				if ackControl(fr, f) {
					continue
				}
				switch f := f.(type) {
				case *http2.RSTStreamFrame:
					// (After its answer, the CONNECT's stream, which the
					// caller left open, is reset with NO_ERROR.)
					if _, ok := got[f.StreamID]; !ok {
						got[f.StreamID] = "RST_STREAM " + f.ErrCode.String()
					}
				case *http2.MetaHeadersFrame:
					if _, ok := got[f.StreamID]; !ok {
						got[f.StreamID] = f.PseudoValue("status")
					}
				case *http2.DataFrame:
					bodies[f.StreamID] += string(f.Data())
					if !f.StreamEnded() {
						continue
					}
				case *http2.GoAwayFrame:
					t.Fatalf("GOAWAY %v (so far %v)", f.ErrCode, got)
				}
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("answers took %v", d)
			}
			want := map[uint32]string{1: "RST_STREAM PROTOCOL_ERROR", 3: "405", 5: "200"}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("extended CONNECT, CONNECT, GET got %v; want %v", got, want)
			}
			// The bodies' rest, within the connection's deadline.
			for !strings.Contains(bodies[5], "saw GET /after") || !strings.Contains(bodies[3], "CONNECT is not supported") {
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("reading frames: %v (bodies %v)", err, bodies)
				}
				if df, ok := f.(*http2.DataFrame); ok {
					bodies[df.StreamID] += string(df.Data())
				}
			}
			if reqs := o.requests(); len(reqs) != 1 || reqs[0].uri != "/after" {
				t.Fatalf("the upstream saw %v; want only the GET", reqs)
			}
		})
	}
}
