package telemetry

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// asciiOnly must say true exactly when no byte has its top bit set, at
// every length and for a high byte at every place (the overlapping last
// word, the loop's words, the short strings' byte loop).
func TestASCIIOnly(t *testing.T) {
	for n := 0; n <= 40; n++ {
		s := bytes.Repeat([]byte{'a'}, n)
		if !asciiOnly(string(s)) {
			t.Fatalf("%d ASCII bytes: not ASCII", n)
		}
		for i := 0; i < n; i++ {
			for _, c := range []byte{0x80, 0xc3, 0xff} {
				b := bytes.Clone(s)
				b[i] = c
				if asciiOnly(string(b)) {
					t.Fatalf("length %d, byte %#x at %d: said ASCII", n, c, i)
				}
			}
		}
	}
	for _, s := range []string{"é", "outbound/é", "GET /caf\xc3\xa9 HTTP/1.1", "\x7f\x00\x01"} {
		want := true
		for i := 0; i < len(s); i++ {
			want = want && s[i] < utf8.RuneSelf
		}
		if got := asciiOnly(s); got != want {
			t.Errorf("asciiOnly(%q) = %v, want %v", s, got, want)
		}
	}
}

// validUTF8 keeps valid strings, ASCII or not, and replaces what is not.
func TestValidUTF8Fast(t *testing.T) {
	for s, want := range map[string]string{
		"":                      "",
		"/plain/path?q=1":       "/plain/path?q=1",
		"/café/crème-brûlée/x":  "/café/crème-brûlée/x",
		"/bad\xffbyte/and-more": "/bad\uFFFDbyte/and-more",
		"\xc3":                  "\uFFFD",
	} {
		if got := validUTF8(s); got != want {
			t.Errorf("validUTF8(%q) = %q, want %q", s, got, want)
		}
	}
}

// appendVarint writes protowire's bytes for every value, around each
// length boundary.
func TestAppendVarintMatchesProtowire(t *testing.T) {
	vals := []uint64{0, 1, math.MaxUint64}
	for shift := 1; shift < 64; shift++ {
		v := uint64(1) << shift
		vals = append(vals, v-1, v, v+1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		vals = append(vals, r.Uint64()>>r.IntN(64))
	}
	for _, v := range vals {
		pre := []byte{0xaa}
		if got, want := appendVarint(pre, v), protowire.AppendVarint([]byte{0xaa}, v); !bytes.Equal(got, want) {
			t.Fatalf("appendVarint(%d) = %x, want %x", v, got, want)
		}
	}
}

// traceparentValue spells the IDs and flags as hex.EncodeToString does.
func TestTraceparentValueHex(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	ids := [][2]uint64{{0, 1}, {math.MaxUint64, math.MaxUint64}, {0x0123456789abcdef, 0xfedcba9876543210}}
	for range 500 {
		ids = append(ids, [2]uint64{r.Uint64(), r.Uint64()})
	}
	for i, id := range ids {
		var tid trace.TraceID
		var sid trace.SpanID
		for j := range 8 {
			tid[j], tid[8+j] = byte(id[0]>>(8*j)), byte(id[1]>>(8*j))
			sid[j] = byte((id[0] ^ id[1]) >> (8 * j))
		}
		flags := trace.TraceFlags(i % 256)
		want := "00-" + hex.EncodeToString(tid[:]) + "-" + hex.EncodeToString(sid[:]) + "-" + hex.EncodeToString([]byte{byte(flags)})
		if got := traceparentValue(tid, sid, flags)[0]; got != want {
			t.Fatalf("traceparentValue = %q, want %q", got, want)
		}
	}
}

// hostPort gives splitHostPort's answer for every string, whichever
// strings shared its slot before; and the addresses of callers on one
// host, which differ in their ports alone, spread over the slots.
func TestHostPortMemo(t *testing.T) {
	var w attrEncoder
	r := rand.New(rand.NewPCG(5, 6))
	var addrs []string
	for i := range 200 {
		addrs = append(addrs, fmt.Sprintf("10.0.%d.%d:%d", i%3, i%7, 30000+r.IntN(30000)), fmt.Sprintf("[fe80::%x]:%d", i, 80+i%5), fmt.Sprintf("host-%d", i%11))
	}
	for range 3000 {
		hp := addrs[r.IntN(len(addrs))]
		h, p := w.hostPort(hp)
		if wh, wp := splitHostPort(hp); h != wh || p != wp {
			t.Fatalf("hostPort(%q) = %q, %d, want %q, %d", hp, h, p, wh, wp)
		}
	}
	slots := map[int]bool{}
	for port := 41000; port < 41032; port++ {
		slots[hostPortSlot(fmt.Sprintf("127.0.0.1:%d", port))] = true
	}
	if len(slots) < 24 {
		t.Errorf("32 callers' addresses took %d of %d slots", len(slots), len(w.memo))
	}
}

// attrEncoder.num writes what the generic encoder writes for an int
// attribute, for keys of every length it writes in place and values of
// every varint length, negative ones (ten bytes) included.
func TestAttrEncoderNumMatchesGeneric(t *testing.T) {
	var w attrEncoder
	for _, klen := range []int{1, 7, 50, 0x80 - 17, 0x80 - 16, 200} {
		k := attribute.Key(strings.Repeat("k", klen))
		for _, v := range []int64{0, 1, 127, 128, 16383, 16384, 1 << 35, math.MaxInt64, -1, math.MinInt64} {
			w.b = append(w.b[:0], 0xaa) // bytes before it stay
			w.num(k, v)
			want := appendIntKV([]byte{0xaa}, fSpanAttributes, string(k), v)
			if !bytes.Equal(w.b, want) {
				t.Fatalf("num(%d-byte key, %d) = %x, want %x", klen, v, w.b, want)
			}
		}
	}
}
