package sidecar

import "bytes"

// Eight bytes at a time: every byte of a word holding 0x01, 0x20 or 0x80.
const (
	bytesOf01 = 0x0101010101010101
	bytesOf20 = 0x2020202020202020
	bytesOf80 = 0x8080808080808080
)

// printableASCII reports whether every byte of s is printable ASCII, 0x20
// (space) to 0x7e, looking at eight bytes at a time: header values are
// checked on every request, and a byte-by-byte loop was a good part of
// that.
func printableASCII(s string) bool {
	n := len(s)
	if n >= 4 && n < 8 {
		// The first four and the last four, which may overlap, as one
		// word: a Content-Length's value, say, without a loop.
		return printableBits(uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
			uint64(s[n-4])<<32 | uint64(s[n-3])<<40 | uint64(s[n-2])<<48 | uint64(s[n-1])<<56)
	}
	if n < 8 {
		for i := 0; i < n; i++ {
			if c := s[i]; c < 0x20 || c >= 0x7f {
				return false
			}
		}
		return true
	}
	for i := 0; i+8 < n; i += 8 {
		if !printableWord(s[i : i+8]) {
			return false
		}
	}
	return printableWord(s[n-8:]) // the last eight, which may overlap
}

// printableWord is printableASCII of eight bytes, as one word.
func printableWord(s string) bool {
	_ = s[7]
	return printableBits(uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56)
}

// printableBits is printableWord of the eight bytes in w.
func printableBits(w uint64) bool {
	// A byte below 0x20 borrows in w-0x20 and has its top bit clear in
	// w; a byte of 0x7f carries into its top bit in w+1; a byte of 0x80
	// or more has it set in w. A borrow or carry reaching the next byte
	// comes only from a byte already found.
	return ((w-bytesOf20)&^w|(w+bytesOf01)|w)&bytesOf80 == 0
}

// indexCRLFCRLF is bytes.Index(b, "\r\n\r\n"), the end of a head, found by
// jumping from LF to LF: a head has a few lines, and the search for the
// four bytes at every position cost more than reading them.
func indexCRLFCRLF(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		j += i
		if j >= 1 && j+2 < len(b) && b[j-1] == '\r' && b[j+1] == '\r' && b[j+2] == '\n' {
			return j - 1
		}
		i = j + 1
	}
}
