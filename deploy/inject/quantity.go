package inject

import (
	"errors"
	"math/big"
	"strconv"
	"strings"
)

// quantity is a Kubernetes resource quantity ("100m", "128Mi", "1.5Gi",
// "2e3") as the API server reads and writes it: its value, rounded up to
// the nano unit, and the text it is written back as. parseQuantity and
// String follow k8s.io/apimachinery's resource.ParseQuantity and
// Quantity.String (same accepted syntax, same canonical form, same reuse of
// an input already in canonical form); a test compares the two over many
// inputs. ferry keeps its own copy so that the binary does not carry the
// Kubernetes API packages.
type quantity struct {
	nanos *big.Int // the value in units of 1e-9
	text  string
}

// quantityFormat is how a quantity is written: like its input's suffix.
type quantityFormat int

const (
	decimalSI       quantityFormat = iota // "", n, u, m, k, M, G, T, P, E
	binarySI                              // Ki, Mi, Gi, Ti, Pi, Ei
	decimalExponent                       // e3, E-2
)

var (
	errQuantityFormat = errors.New("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
	errQuantitySuffix = errors.New("unable to parse quantity's suffix")
	errQuantityNumber = errors.New("unable to parse numeric part of quantity")
	// errQuantityExponent is ferry's own limit (see maxQuantityExponent).
	errQuantityExponent = errors.New("quantity's exponent is out of range")
)

// The decimal suffixes by power of ten, and the binary ones by power of 1024.
var (
	decimalSuffixes = map[string]int{"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
	binarySuffixes  = []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
)

// maxQuantityExponent bounds the power of ten of an "e" suffix, so that an
// annotation cannot make the injector build an enormous number.
const maxQuantityExponent = 1000

// splitQuantity cuts a quantity into sign, numerator digits (leading zeros
// dropped, "0" when none), fraction digits and suffix.
func splitQuantity(s string) (negative bool, num, frac, suffix string, err error) {
	i := 0
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		negative = s[i] == '-'
		i++
	}
	for i < len(s) && s[i] == '0' {
		i++
	}
	if i == len(s) {
		return negative, "0", "", "", nil
	}
	start := i
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	num = s[start:i]
	if num == "" {
		num = "0"
	}
	if i < len(s) && s[i] == '.' {
		i++
		start = i
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		frac = s[start:i]
	}
	suffixStart := i
	for i < len(s) && strings.IndexByte("eEinumkKMGTP", s[i]) >= 0 {
		i++
	}
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		i++
	}
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	if i < len(s) {
		return false, "", "", "", errQuantityFormat
	}
	return negative, num, frac, s[suffixStart:], nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// suffixValue reads a suffix: a power of ten (decimal and exponent forms)
// or of two (binary).
func suffixValue(suffix string) (base, exp int, format quantityFormat, err error) {
	if e, ok := decimalSuffixes[suffix]; ok {
		return 10, e, decimalSI, nil
	}
	for i, b := range binarySuffixes[1:] {
		if suffix == b {
			return 2, 10 * (i + 1), binarySI, nil
		}
	}
	if len(suffix) > 1 && (suffix[0] == 'e' || suffix[0] == 'E') {
		e, err := strconv.ParseInt(suffix[1:], 10, 64)
		if err != nil {
			return 0, 0, 0, errQuantitySuffix
		}
		if e < -maxQuantityExponent || e > maxQuantityExponent {
			return 0, 0, 0, errQuantityExponent
		}
		return 10, int(e), decimalExponent, nil
	}
	return 0, 0, 0, errQuantitySuffix
}

var (
	bigTen      = big.NewInt(10)
	bigThousand = big.NewInt(1000)
	bigGiga     = big.NewInt(1e9)
	bigMaxInt64 = new(big.Int).Mul(big.NewInt(1<<63-1), bigGiga) // in nanos
)

// parseQuantity reads a quantity the way the Kubernetes API does.
func parseQuantity(s string) (quantity, error) {
	if s == "" {
		return quantity{}, errQuantityFormat
	}
	if s == "0" {
		return quantity{nanos: new(big.Int), text: "0"}, nil
	}
	negative, num, frac, suffix, err := splitQuantity(s)
	if err != nil {
		return quantity{}, err
	}
	base, exp, format, err := suffixValue(suffix)
	if err != nil {
		return quantity{}, err
	}
	if !int64Path(format, exp, num, frac) && strings.IndexAny(s[:len(s)-len(suffix)], "0123456789") < 0 {
		// The general path reads the numeric text as a decimal, which
		// needs a digit ("-Pi" and ".e-12" are not quantities).
		return quantity{}, errQuantityNumber
	}
	digits := num + frac
	unscaled, ok := new(big.Int).SetString(digits, 10)
	if !ok {
		return quantity{}, errQuantityNumber
	}
	// value = unscaled * 10^-len(frac) * base^exp, in nanos: * 10^9.
	nanos := new(big.Int).Set(unscaled)
	pow10 := 9 - len(frac)
	if base == 10 {
		pow10 += exp
	} else {
		nanos.Lsh(nanos, uint(exp))
	}
	if pow10 >= 0 {
		nanos.Mul(nanos, new(big.Int).Exp(bigTen, big.NewInt(int64(pow10)), nil))
	} else {
		// Anything finer than a nano rounds up to the next nano: whoever
		// asks for some of a resource gets some.
		div := new(big.Int).Exp(bigTen, big.NewInt(int64(-pow10)), nil)
		var rem big.Int
		nanos.QuoRem(nanos, div, &rem)
		if rem.Sign() != 0 {
			nanos.Add(nanos, big.NewInt(1))
		}
	}
	if format == binarySI && nanos.Cmp(bigMaxInt64) > 0 {
		nanos.Set(bigMaxInt64)
	}
	if negative {
		nanos.Neg(nanos)
	}
	q := quantity{nanos: nanos}
	if reuseQuantityText(format, exp, num, frac) {
		q.text = s
	} else {
		q.text = canonicalQuantity(nanos, format)
	}
	return q, nil
}

// int64Path reports whether the API machinery reads the number on its
// int64 fast path (few enough digits, no finer than a nano).
func int64Path(format quantityFormat, exp int, num, frac string) bool {
	if format == binarySI {
		return frac == "" && len(num)+exp*3/10+1 <= 15
	}
	return len(num)+len(frac) <= 18 && exp-len(frac) >= -9
}

// reuseQuantityText reports whether the API machinery keeps the input
// text: when it read the number on its fast path and it is already written
// canonically.
func reuseQuantityText(format quantityFormat, exp int, num, frac string) bool {
	if !int64Path(format, exp, num, frac) {
		return false
	}
	digits := num + frac
	if format == binarySI {
		v, err := strconv.ParseInt(digits, 10, 64)
		return err == nil && v&7 != 0
	}
	scale := exp - len(frac)
	return scale%3 == 0 && !strings.HasSuffix(digits, "000") && digits[0] != '0'
}

// canonicalQuantity writes a value the way Quantity.String does when it
// cannot reuse the input: a binary value as an integer times the largest
// power of 1024 that divides it (below 1024, or not whole: decimal), a
// decimal one as an integer times the largest power of 1000 that divides
// it.
func canonicalQuantity(nanos *big.Int, format quantityFormat) string {
	if nanos.Sign() == 0 {
		return "0"
	}
	abs := new(big.Int).Abs(nanos)
	if format == binarySI {
		whole, rem := new(big.Int).QuoRem(abs, bigGiga, new(big.Int))
		if whole.Cmp(big.NewInt(1024)) < 0 || rem.Sign() != 0 {
			format = decimalSI
		} else {
			if nanos.Sign() < 0 {
				whole.Neg(whole)
			}
			n := 0
			for whole.TrailingZeroBits() >= 10 && n < len(binarySuffixes)-1 {
				whole.Rsh(whole, 10)
				n++
			}
			return whole.String() + binarySuffixes[n]
		}
	}
	m := new(big.Int).Set(nanos)
	exp := -9
	var rem big.Int
	for {
		q, _ := new(big.Int).QuoRem(m, bigThousand, &rem)
		if rem.Sign() != 0 {
			break
		}
		m, exp = q, exp+3
	}
	if format == decimalExponent {
		if exp == 0 {
			return m.String()
		}
		return m.String() + "e" + strconv.Itoa(exp)
	}
	for s, e := range decimalSuffixes {
		if e == exp {
			return m.String() + s
		}
	}
	return m.String() // as Kubernetes: no suffix beyond E
}

// String is the quantity as the API server would write it.
func (q quantity) String() string { return q.text }

// Sign is -1, 0 or 1.
func (q quantity) Sign() int { return q.nanos.Sign() }

// Cmp compares two quantities by value.
func (q quantity) Cmp(o quantity) int { return q.nanos.Cmp(o.nanos) }

// MarshalJSON writes the quantity as a JSON string.
func (q quantity) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(q.text)), nil }
