package aggregate

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cockroachdb/apd/v3"
)

// decimalInputs are amounts as a CSV can hold them: signs, leading zeros,
// points, 0 to 22 digits on each side, and strings apd or the fast path
// must refuse.
func decimalInputs(r *rand.Rand, n int) []string {
	in := []string{
		"0", "-0", "+0", "0.00", "-0.00", ".5", "-.5", "5.", "-5.", ".", "-", "+", "",
		"1e3", "1E-2", "NaN", "Inf", "-Infinity", " 1", "1 ", "1.2.3", "--1", "+-1", "0x10",
		"9999999999999999999", "18446744073709551615", "18446744073709551616",
		"99999999999999999999", "0.0000000000000000001", "-0.00000000000000000001",
		"1234567890123456789.5", "000000000000000000001", "12.34", "-12.34",
	}
	digits := func(k int) string {
		var b strings.Builder
		for range k {
			b.WriteByte(byte('0' + r.IntN(10)))
		}
		return b.String()
	}
	for range n {
		s := [...]string{"", "-", "+"}[r.IntN(3)] + digits(r.IntN(23))
		if r.IntN(4) > 0 {
			s += "." + digits(r.IntN(23))
		}
		in = append(in, s)
	}
	return in
}

func sameDecimal(a, b *apd.Decimal) bool {
	return a.Form == b.Form && a.Negative == b.Negative && a.Exponent == b.Exponent && a.Coeff.Cmp(&b.Coeff) == 0
}

// TestDecimalFastPath: setAmount gives exactly what apd's SetString gives,
// values and errors, on every input.
func TestDecimalFastPath(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for _, s := range decimalInputs(r, 20000) {
		var want, got apd.Decimal
		_, _, wantErr := want.SetString(s)
		if setPlainDecimal(&got, s) {
			fast++
			if wantErr != nil || !sameDecimal(&got, &want) {
				t.Fatalf("%q: fast path gives %s (%+v), apd %s (%+v, %v)", s, got.String(), got, want.String(), want, wantErr)
			}
		}
		got = apd.Decimal{}
		if err := setAmount(&got, s); (err != nil) != (wantErr != nil) || (err == nil && !sameDecimal(&got, &want)) {
			t.Fatalf("%q: setAmount gives %s, %v; apd %s, %v", s, got.String(), err, want.String(), wantErr)
		}
	}
	if fast < 5000 {
		t.Fatalf("only %d inputs took the fast path: it does not cover plain amounts", fast)
	}
}

func BenchmarkDecimal(b *testing.B) {
	var d apd.Decimal
	b.Run("parse/apd", func(b *testing.B) {
		for range b.N {
			_, _, _ = d.SetString("-1234.56")
		}
	})
	b.Run("parse/fast", func(b *testing.B) {
		for range b.N {
			_ = setAmount(&d, "-1234.56")
		}
	})
}
