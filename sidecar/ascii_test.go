package sidecar

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func printableByBytes(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// printableASCII agrees with the byte-by-byte definition for every byte
// value at every position of strings up to 17 bytes long (within a word,
// in the tail, beside the neighbours that borrow or carry most), and for
// random strings.
func TestPrintableASCII(t *testing.T) {
	for n := 0; n <= 17; n++ {
		for _, fill := range []byte{' ', '~', 'a', '0'} {
			for pos := 0; pos < n; pos++ {
				for c := 0; c < 256; c++ {
					b := make([]byte, n)
					for i := range b {
						b[i] = fill
					}
					b[pos] = byte(c)
					if got, want := printableASCII(string(b)), printableByBytes(string(b)); got != want {
						t.Fatalf("printableASCII(%q) = %v, want %v", b, got, want)
					}
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			switch r.IntN(4) {
			case 0:
				b[i] = byte(r.IntN(256))
			default:
				b[i] = byte(0x20 + r.IntN(0x5f))
			}
		}
		if got, want := printableASCII(string(b)), printableByBytes(string(b)); got != want {
			t.Fatalf("printableASCII(%q) = %v, want %v", b, got, want)
		}
	}
}

// indexCRLFCRLF finds what bytes.Index finds, on every string of up to 10 bytes
// of CR, LF and another byte.
func TestIndexCRLFCRLFAsIndex(t *testing.T) {
	alphabet := []byte{'\r', '\n', 'x'}
	var b []byte
	var walk func(n int)
	walk = func(n int) {
		if got, want := indexCRLFCRLF(b), bytes.Index(b, []byte("\r\n\r\n")); got != want {
			t.Fatalf("indexCRLFCRLF(%q) = %d, bytes.Index says %d", b, got, want)
		}
		if n == 0 {
			return
		}
		for _, c := range alphabet {
			b = append(b, c)
			walk(n - 1)
			b = b[:len(b)-1]
		}
	}
	walk(10)
}
