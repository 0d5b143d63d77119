package position

import (
	"math/rand/v2"
	"sort"
	"testing"
)

// Cases from rocicorp/fractional-indexing's own test suite.
func TestBetweenKnownKeys(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"", "", "a0"},
		{"", "a0", "Zz"},
		{"", "Zz", "Zy"},
		{"a0", "", "a1"},
		{"a1", "", "a2"},
		{"a0", "a1", "a0V"},
		{"a1", "a2", "a1V"},
		{"a0V", "a1", "a0l"},
		{"Zz", "a0", "ZzV"},
		{"Zz", "a1", "a0"},
		{"", "Y00", "Xzzz"},
		{"bzz", "", "c000"},
		{"a0", "a0V", "a0G"},
		{"a0", "a0G", "a08"},
		{"b125", "b129", "b127"},
		{"a0", "a1V", "a1"},
		{"Zz", "a01", "a0"},
		{"", "a0V", "a0"},
		{"", "b999", "b99"},
		{"zzzzzzzzzzzzzzzzzzzzzzzzzzy", "", "zzzzzzzzzzzzzzzzzzzzzzzzzzz"},
		{"zzzzzzzzzzzzzzzzzzzzzzzzzzz", "", "zzzzzzzzzzzzzzzzzzzzzzzzzzzV"},
		{"", smallestInteger + "1", smallestInteger + "0V"},
		{"", "A00000000000000000000000001", smallestInteger + "V"},
	}
	for _, tt := range tests {
		got, err := Between(tt.a, tt.b)
		if err != nil {
			t.Errorf("Between(%q, %q): %v", tt.a, tt.b, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Between(%q, %q) = %q, want %q", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestBetweenRejects(t *testing.T) {
	tests := []struct{ a, b string }{
		{"a1", "a0"},                        // out of order
		{"a0", "a0"},                        // equal
		{"A00000000000000000000000000", ""}, // smallest integer
		{"a00", ""},                         // trailing zero
		{"a", ""},                           // integer part too short
		{"a0", "!"},                         // bad character
	}
	for _, tt := range tests {
		if got, err := Between(tt.a, tt.b); err == nil {
			t.Errorf("Between(%q, %q) = %q, want an error", tt.a, tt.b, got)
		}
	}
}

// TestBetweenKeepsOrder inserts at random places and checks every key stays
// valid and the list stays sorted byte-wise.
func TestBetweenKeepsOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{}
	for range 2000 {
		i := rng.IntN(len(keys) + 1)
		lo, hi := "", ""
		if i > 0 {
			lo = keys[i-1]
		}
		if i < len(keys) {
			hi = keys[i]
		}
		k, err := Between(lo, hi)
		if err != nil {
			t.Fatalf("Between(%q, %q): %v", lo, hi, err)
		}
		if err := Validate(k); err != nil {
			t.Fatalf("Between(%q, %q) = %q, invalid: %v", lo, hi, k, err)
		}
		if (lo != "" && k <= lo) || (hi != "" && k >= hi) {
			t.Fatalf("Between(%q, %q) = %q, not between", lo, hi, k)
		}
		keys = append(keys[:i], append([]string{k}, keys[i:]...)...)
	}
	if !sort.StringsAreSorted(keys) {
		t.Fatal("keys not sorted")
	}
}

func FuzzBetween(f *testing.F) {
	f.Add("a0", "a1")
	f.Add("", "Zz")
	f.Add("a0V", "")
	f.Fuzz(func(t *testing.T, a, b string) {
		k, err := Between(a, b)
		if err != nil {
			return
		}
		if err := Validate(k); err != nil {
			t.Fatalf("Between(%q, %q) = %q, invalid: %v", a, b, k, err)
		}
		if (a != "" && k <= a) || (b != "" && k >= b) {
			t.Fatalf("Between(%q, %q) = %q, not between", a, b, k)
		}
	})
}
