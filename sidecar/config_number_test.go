package sidecar

import (
	"strings"
	"testing"
)

// An integer written with a leading zero was read as YAML 1.1 octal,
// without a word: failure_statuses: [0503] counted status 323 as a
// failure, max_in_flight: 017 allowed 15. And a number out of range was
// refused in Go's or the wrong words: 99999999999999999999 as "want a whole
// number" (it is one), 1e400 as "want int" or "want float64". Each must be
// refused naming its key and saying what is wrong.
func TestParseConfigNumbersReadAsWritten(t *testing.T) {
	svc := "outbound: {}\nservices:\n  a:\n    endpoints: [127.0.0.1:1]\n    "
	for _, tc := range []struct{ text, want string }{
		{svc + "breaker: { failure_statuses: [0503] }\n", `services.a.breaker.failure_statuses[0]: invalid value "0503": a whole number has no leading zero`},
		{svc + "retry: { on_statuses: [502, 0503] }\n", `services.a.retry.on_statuses[1]: invalid value "0503": a whole number has no leading zero`},
		{svc + "max_in_flight: 017\n", `services.a.max_in_flight: invalid value "017": a whole number has no leading zero`},
		{svc + "max_in_flight: -017\n", `services.a.max_in_flight: invalid value "-017": a whole number has no leading zero`},
		{svc + "max_in_flight: 99999999999999999999\n", `services.a.max_in_flight: invalid value "99999999999999999999": out of range (at most 9223372036854775807)`},
		{svc + "max_in_flight: -99999999999999999999\n", `services.a.max_in_flight: invalid value "-99999999999999999999": out of range (at least -9223372036854775808)`},
		{svc + "max_in_flight: 1e400\n", `services.a.max_in_flight: invalid value "1e400": want a whole number`},
		{svc + "breaker: { failure_ratio: 1e400 }\n", `services.a.breaker.failure_ratio: invalid value "1e400": out of range (more than a 64-bit float holds, about 1.8e308)`},
		{svc + "breaker: { failure_ratio: abc }\n", `services.a.breaker.failure_ratio: invalid value "abc": want a number`},
	} {
		_, err := ParseConfig([]byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.text, err, tc.want)
		}
	}
	for _, ok := range []string{"max_in_flight: 0", "max_in_flight: 10", "max_in_flight: 0x10", "max_in_flight: 0o17", "breaker: { failure_ratio: 0.05 }", "breaker: { failure_statuses: [503] }"} {
		if _, err := ParseConfig([]byte(svc + ok + "\n")); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// A quoted number is a string, refused as such.
func TestParseConfigQuotedNumberIsNotANumber(t *testing.T) {
	_, err := ParseConfig([]byte("outbound: {}\nlimits: { max_connections: \"0503\" }\n"))
	if want := `limits.max_connections: invalid value "0503": want a whole number`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want one containing %q", err, want)
	}
}
