package telemetry

import (
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// attrEncoder writes the attributes of ferry's server and client spans as
// OTLP KeyValues (Span field 9) straight from their raw values
// (proxyAttrs), with the bytes appendKeyValue writes for the same
// attribute.KeyValues, without building them. Not safe for concurrent use.
type attrEncoder struct {
	b []byte
	// host:port strings split, and their parts, one per slot chosen by
	// a hash of the string (hostPortSlot): a proxy sees the same few
	// Host headers and endpoints again and again, and the addresses of
	// the callers on its open connections, which differ in their ports.
	memo [64]hostPortMemo

	// Client spans' heads and the bytes of their attributes that come
	// from the head alone (eachClientHead, eachClientPeer), one per slot
	// chosen by the endpoint: a client span of a head seen gets them
	// copied. A proxy's attempts go to a few endpoints in turn, with one
	// head each, mostly.
	heads [16]headMemo
	// Server spans' heads and the bytes of their attributes that come
	// from the head alone (eachServerHead, eachServerConn), two per set
	// chosen by the caller's address: the requests on one connection
	// repeat them, mostly. Two ways, because the callers' connections
	// are many and long-lived: with one way, 32 of them in 64 slots left
	// about a third sharing a slot, and each pair of those wrote its
	// bytes anew on every request they took turns with.
	servers [serverSets]serverSet
}

// serverSets is the number of sets of attrEncoder.servers, a power of two.
const serverSets = 128

// serverSet is one set of attrEncoder.servers: two memos, and which of
// them was used last (the other is the one a new head replaces).
type serverSet struct {
	way  [2]serverMemo
	last uint8
}

// maxServerMemo is the most bytes of attributes a serverMemo keeps: the
// Host and User-Agent are the caller's, up to the header limit, and a slot
// lives as long as the exporter.
const maxServerMemo = 1024

type serverMemo struct {
	head        serverHead
	head1, conn []byte
	set         bool
}

// hit reports whether m holds the bytes of head h. The caller's address
// is compared first: in a set, the heads of different callers differ
// there, mostly.
func (m *serverMemo) hit(h *serverHead) bool {
	return m.set && m.head.remote == h.remote && m.head == *h
}

type headMemo struct {
	head        clientHead
	head1, peer []byte
	set         bool
}

// headSlot is the slot of endpoint in attrEncoder.heads (FNV-1a).
func headSlot(endpoint string) int {
	h := uint32(2166136261)
	for i := 0; i < len(endpoint); i++ {
		h = (h ^ uint32(endpoint[i])) * 16777619
	}
	return int(h^h>>16) & 15
}

type hostPortMemo struct {
	in, host string
	port     int
}

// appendAll appends the span attributes of a to b.
func (w *attrEncoder) appendAll(b []byte, a *proxyAttrs) []byte {
	w.b = b
	if a.client {
		// As eachClient, with the bytes of a head seen before copied.
		h, m := a.clientHead(), &w.heads[headSlot(a.endpoint)]
		if m.set && h == m.head {
			w.b = append(w.b, m.head1...)
			a.eachClientURL(w)
			w.b = append(w.b, m.peer...)
		} else {
			m.set = false
			n := len(w.b)
			a.eachClientHead(w)
			m.head1 = append(m.head1[:0], w.b[n:]...)
			a.eachClientURL(w)
			n = len(w.b)
			a.eachClientPeer(w)
			m.peer = append(m.peer[:0], w.b[n:]...)
			m.head, m.set = h, true
		}
		a.eachClientTail(w)
	} else if h, ok := a.serverHead(); ok {
		// As eachServer, with the bytes of a head seen before copied.
		set := &w.servers[serverSetOf(a.remote)]
		way := set.last
		m := &set.way[way]
		hit := m.hit(&h)
		if !hit {
			way ^= 1
			m = &set.way[way]
			hit = m.hit(&h)
		}
		set.last = way
		if hit {
			w.b = append(w.b, m.head1...)
			w.str(semconv.URLPathKey, a.path)
			w.b = append(w.b, m.conn...)
		} else {
			// Neither way holds it: the one not used last is replaced.
			m.set = false
			n := len(w.b)
			a.eachServerHead(w)
			m.head1 = append(m.head1[:0], w.b[n:]...)
			w.str(semconv.URLPathKey, a.path)
			n = len(w.b)
			a.eachServerConn(w)
			if len(m.head1)+len(w.b)-n <= maxServerMemo {
				m.conn = append(m.conn[:0], w.b[n:]...)
				m.head, m.set = h, true
			}
		}
		a.eachServerTail(w)
	} else {
		a.each(w)
	}
	b = w.b
	w.b = nil
	return b
}

func (w *attrEncoder) str(k attribute.Key, v string) {
	v = validUTF8(v)
	if len(k) > 0 && len(k)+len(v) < 0x80-6 {
		// Every length fits one byte: Span.attributes (field 9), the
		// KeyValue's length, its key, its value (field 2) holding an
		// AnyValue with string_value (field 1). Written in place, room
		// made once.
		kvLen := 6 + len(k) + len(v)
		n := len(w.b)
		w.b = slices.Grow(w.b, 2+kvLen)[:n+2+kvLen]
		b := w.b[n:]
		_ = b[3]
		b[0], b[1], b[2], b[3] = fSpanAttributes<<3|byte(protowire.BytesType), byte(kvLen), fKVKey<<3|byte(protowire.BytesType), byte(len(k))
		b = b[4+copy(b[4:], k):]
		_ = b[3]
		b[0], b[1], b[2], b[3] = fKVValue<<3|byte(protowire.BytesType), byte(len(v)+2), fAnyString<<3|byte(protowire.BytesType), byte(len(v))
		copy(b[4:], v)
		return
	}
	w.b = appendStringKV(w.b, fSpanAttributes, string(k), v, "", "", "", "")
}

func (w *attrEncoder) url(k attribute.Key, p [5]string) {
	for _, s := range p {
		if !asciiOnly(s) && !utf8.ValidString(s) {
			// As the generic encoder writes the whole string: invalid
			// bytes replaced in the concatenation, not part by part (a
			// character may straddle two parts).
			w.b = appendStringKV(w.b, fSpanAttributes, string(k), validUTF8(p[0]+p[1]+p[2]+p[3]+p[4]), "", "", "", "")
			return
		}
	}
	w.b = appendStringKV(w.b, fSpanAttributes, string(k), p[0], p[1], p[2], p[3], p[4])
}

func (w *attrEncoder) num(k attribute.Key, v int64) {
	if len(k) > 0 && len(k) < 0x80-16 {
		// As in str, with int_value (field 3), a varint of at most 10
		// bytes.
		n := protowire.SizeVarint(uint64(v))
		w.b = append(w.b, fSpanAttributes<<3|byte(protowire.BytesType), byte(len(k)+n+5),
			fKVKey<<3|byte(protowire.BytesType), byte(len(k)))
		w.b = append(w.b, k...)
		w.b = append(w.b, fKVValue<<3|byte(protowire.BytesType), byte(n+1), fAnyInt<<3|byte(protowire.VarintType))
		w.b = appendVarint(w.b, uint64(v))
		return
	}
	w.b = appendIntKV(w.b, fSpanAttributes, string(k), v)
}

func (w *attrEncoder) hostPort(hp string) (string, int) {
	m := &w.memo[hostPortSlot(hp)]
	if m.in == hp && m.host != "" {
		return m.host, m.port
	}
	h, p := splitHostPort(hp)
	*m = hostPortMemo{in: hp, host: h, port: p}
	return h, p
}

// hostPortSlot is the slot of hp in attrEncoder.memo.
func hostPortSlot(hp string) int { return int(hostPortHash(hp)) & 63 }

// serverSetOf is the set of a caller's address in attrEncoder.servers.
func serverSetOf(remote string) int { return int(hostPortHash(remote)) & (serverSets - 1) }

// hostPortHash is FNV-1a of hp with its upper bits folded in: addresses
// that differ in the last digits of their ports alone spread.
func hostPortHash(hp string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(hp); i++ {
		h = (h ^ uint32(hp[i])) * 16777619
	}
	return h ^ h>>8 ^ h>>16
}

// appendStringKV appends a KeyValue message as field num whose value is
// the string v1+v2+v3+v4+v5 (an AnyValue with string_value set, even when
// empty), which the caller has made valid UTF-8.
func appendStringKV(b []byte, num protowire.Number, key, v1, v2, v3, v4, v5 string) []byte {
	vl := len(v1) + len(v2) + len(v3) + len(v4) + len(v5)
	anyLen := 1 + protowire.SizeVarint(uint64(vl)) + vl
	b = appendKVHead(b, num, key, anyLen)
	b = appendTag(b, fAnyString, protowire.BytesType)
	b = appendVarint(b, uint64(vl))
	b = append(b, v1...)
	b = append(b, v2...)
	b = append(b, v3...)
	b = append(b, v4...)
	return append(b, v5...)
}

// appendIntKV appends a KeyValue message as field num whose value is the
// integer v.
func appendIntKV(b []byte, num protowire.Number, key string, v int64) []byte {
	anyLen := 1 + protowire.SizeVarint(uint64(v))
	b = appendKVHead(b, num, key, anyLen)
	b = appendTag(b, fAnyInt, protowire.VarintType)
	return appendVarint(b, uint64(v))
}

// appendKVHead appends a KeyValue's tag, length, key and the head of its
// value, an AnyValue of anyLen bytes that the caller appends next.
func appendKVHead(b []byte, num protowire.Number, key string, anyLen int) []byte {
	key = validUTF8(key) // before its length is counted
	kvLen := 1 + protowire.SizeVarint(uint64(anyLen)) + anyLen
	if key != "" {
		kvLen += 1 + protowire.SizeVarint(uint64(len(key))) + len(key)
	}
	b = appendTag(b, num, protowire.BytesType)
	b = appendVarint(b, uint64(kvLen))
	if key != "" {
		b = appendStringField(b, fKVKey, key)
	}
	b = appendTag(b, fKVValue, protowire.BytesType)
	return appendVarint(b, uint64(anyLen))
}
