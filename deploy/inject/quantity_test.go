package inject

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
)

// quantityInputs are numbers and suffixes whose every combination
// parseQuantity must read exactly as resource.ParseQuantity does.
var (
	quantityNumbers = []string{
		"0", "00", "1", "+1", "-1", "01", "7", "8", "10", "100", "128", "1000", "1023", "1024", "1025",
		"1536", "4096", "0.5", ".5", "1.", "1.0", "1.5", "0.1", "0.0001", "0.0000000001", "-0.5",
		"123456789012345678", "1234567890123456789", "99999999999999999999", "9223372036854775807",
		"1.000000000000000000001", "3.14159", "250", "2500", "12.5", "-", "+", ".", "0.", "-0",
	}
	quantitySuffixes = []string{
		"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
		"e3", "E3", "e-3", "e0", "e+2", "e-12", "e21", "E-9", "e", "K", "mi", "KiB", "x", "i",
	}
)

func TestQuantityMatchesKubernetes(t *testing.T) {
	check := func(s string) {
		t.Helper()
		want, werr := resource.ParseQuantity(s)
		got, gerr := parseQuantity(s)
		if (werr == nil) != (gerr == nil) {
			t.Errorf("%q: Kubernetes error %v, ferry error %v", s, werr, gerr)
			return
		}
		if werr != nil {
			if werr.Error() != gerr.Error() {
				t.Errorf("%q: Kubernetes says %q, ferry %q", s, werr, gerr)
			}
			return
		}
		if got.String() != want.String() {
			t.Errorf("%q: Kubernetes writes %q, ferry %q", s, want.String(), got.String())
		}
		if got.Sign() != want.Sign() {
			t.Errorf("%q: sign %d, want %d", s, got.Sign(), want.Sign())
		}
	}
	for _, n := range quantityNumbers {
		for _, suf := range quantitySuffixes {
			check(n + suf)
		}
	}
	for _, s := range []string{"", " 1", "1 ", "1.5.5", "1e3.5", "1Gi1", "--1", "1e+", "1e-", "abc"} {
		check(s)
	}
}

func TestQuantityOrder(t *testing.T) {
	vals := []string{"1n", "1u", "999999n", "1m", "0.5", "500m", "1", "1000m", "1Ki", "1024", "1.5Gi", "1536Mi", "2Gi"}
	for _, a := range vals {
		for _, b := range vals {
			qa, _ := parseQuantity(a)
			qb, _ := parseQuantity(b)
			ka, kb := resource.MustParse(a), resource.MustParse(b)
			if got, want := qa.Cmp(qb), ka.Cmp(kb); got != want {
				t.Errorf("Cmp(%s, %s) = %d, want %d", a, b, got, want)
			}
		}
	}
}

// FuzzQuantity: any string reads as Kubernetes reads it.
func FuzzQuantity(f *testing.F) {
	for _, s := range []string{"100m", "1.5Gi", "1e3", "0.0000000001", "+01Ki"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 40 {
			return
		}
		got, gerr := parseQuantity(s)
		if gerr == errQuantityExponent {
			return // beyond ferry's own bound (Kubernetes may take minutes)
		}
		want, werr := resource.ParseQuantity(s)
		if werr != nil || gerr != nil {
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("%q: Kubernetes error %v, ferry error %v", s, werr, gerr)
			}
			return
		}
		if got.String() != want.String() {
			t.Fatalf("%q: Kubernetes writes %q, ferry %q", s, want.String(), got.String())
		}
	})
}
