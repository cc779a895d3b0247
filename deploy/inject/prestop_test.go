package inject

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestParsePreStopSleep reads every whole second up to an hour in the forms
// PreStopSleepPattern names, with the value meant, and refuses the next
// seconds past the hour and the Go duration forms outside the pattern
// (which a JSON schema could not bound), each saying why.
func TestParsePreStopSleep(t *testing.T) {
	for n := 0; n <= 3700; n++ {
		d := time.Duration(n) * time.Second
		forms := []string{fmt.Sprint(n), fmt.Sprintf("%ds", n), fmt.Sprintf("0%ds", n)}
		if n >= 60 {
			// Go's own form: 1m30s, 1h0m0s.
			forms = append(forms, d.String())
		}
		if n%60 == 0 && n <= 3600 {
			forms = append(forms, fmt.Sprintf("%dm", n/60), fmt.Sprintf("%dm0s", n/60))
		}
		for _, v := range forms {
			got, err := ParsePreStopSleep(v)
			switch {
			case n <= 3600 && (err != nil || got != d):
				t.Errorf("%q: %v %v, want %s", v, got, err, d)
			case n > 3600 && (err == nil || !strings.Contains(err.Error(), "more than an hour")):
				t.Errorf("%q: %v %v, want refused as more than an hour", v, got, err)
			}
		}
	}
	for v, why := range map[string]string{
		"1500ms": "whole number of seconds", "-3s": "negative", "2h": "more than an hour",
		"0.5m": "want whole seconds", "1m60s": "want whole seconds", "5s5s": "want whole seconds",
		"30s1m": "want whole seconds", "+5s": "want whole seconds", "": "want whole seconds",
		"5 s": "want whole seconds", " 5s": "want whole seconds", "1h0m1s": "more than an hour",
	} {
		if got, err := ParsePreStopSleep(v); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("%q: %v %v, want refused with %q", v, got, err, why)
		}
	}
}

// TestParsePreStopSleepZeroHours reads the forms that begin with a zero
// count of hours ("0h", "0h30m", "0h0m5s"): h, m and s largest first, with
// minutes and seconds below 60 after the larger unit, as the rule says, and
// what the annotation and the flags took before the rule was one pattern.
// Minutes or seconds of 60 or more after 0h stay refused, as after 1h.
func TestParsePreStopSleepZeroHours(t *testing.T) {
	for n := 0; n < 3600; n++ {
		m, s := n/60, n%60
		forms := []string{fmt.Sprintf("0h%dm%ds", m, s), fmt.Sprintf("00h0%dm0%ds", m, s)}
		if s == 0 {
			forms = append(forms, fmt.Sprintf("0h%dm", m))
		}
		if m == 0 {
			forms = append(forms, fmt.Sprintf("0h%ds", s), fmt.Sprintf("0h0m%ds", s))
		}
		if n == 0 {
			forms = append(forms, "0h", "00h", "0h0m", "0h0s")
		}
		want := time.Duration(n) * time.Second
		for _, v := range forms {
			if got, err := ParsePreStopSleep(v); err != nil || got != want {
				t.Errorf("%q: %v %v, want %s", v, got, err, want)
			}
		}
	}
	for _, v := range []string{"0h60m", "0h60s", "0h1m60s", "0h90s", "0h0m60s", "0h61m", "1h1m", "0h5s0m", "h", "0hm5s"} {
		if got, err := ParsePreStopSleep(v); err == nil {
			t.Errorf("%q: %v, want refused", v, got)
		}
	}
}
