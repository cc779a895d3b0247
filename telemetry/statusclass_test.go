package telemetry

import "testing"

// A status of 600 to 999, which net/http's client accepts and ferry relays
// as it came, is labelled as RFC 9110 section 15 says to process it: as a
// 5xx. "none" stays for an exchange that sent no status.
func TestStatusClassOutsideHTTPsRange(t *testing.T) {
	for code, want := range map[int]string{
		0: "none", 100: "1xx", 204: "2xx", 399: "3xx", 404: "4xx", 599: "5xx",
		600: "5xx", 799: "5xx", 999: "5xx",
	} {
		if got := statusClass(code); got != want {
			t.Errorf("statusClass(%d) = %q, want %q", code, got, want)
		}
	}
}
