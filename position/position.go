// Package position computes fractional-index keys: strings ordered byte-wise
// such that a key can always be made between any two others, so a card moves
// between two neighbours without renumbering the rest. It follows the
// algorithm and key format of rocicorp/fractional-indexing (base 62), so keys
// made by its JavaScript version and by this package interleave correctly.
package position

import (
	"errors"
	"fmt"
	"strings"
)

// MaxKeyLength bounds a key's length in bytes. Keys grow by about one byte
// per six insertions at the same spot; this leaves room for thousands.
const MaxKeyLength = 512

const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// smallestInteger is the lowest integer part; a key made of it alone has no
// key below it, so it is not a valid key.
var smallestInteger = "A" + strings.Repeat("0", 26)

// ErrOrder is returned by Between when a is not below b.
var ErrOrder = errors.New("position: first key must be below the second")

// ErrExhausted is returned when no key fits (the integer range or
// MaxKeyLength is used up).
var ErrExhausted = errors.New("position: no key available")

// First is the key Between("", "") returns: the first key of an empty list.
const First = "a0"

// Validate reports whether key is a well-formed key: a valid integer part,
// then a fractional part that does not end in '0', at most MaxKeyLength bytes.
func Validate(key string) error {
	if key == "" {
		return errors.New("empty key")
	}
	if len(key) > MaxKeyLength {
		return fmt.Errorf("key longer than %d bytes", MaxKeyLength)
	}
	if key == smallestInteger {
		return errors.New("key is the smallest integer")
	}
	for i := 0; i < len(key); i++ {
		if strings.IndexByte(digits, key[i]) < 0 {
			return fmt.Errorf("invalid character %q", key[i])
		}
	}
	n := integerLength(key[0])
	if n == 0 {
		return fmt.Errorf("invalid head %q", key[0])
	}
	if len(key) < n {
		return errors.New("integer part too short")
	}
	if strings.HasSuffix(key[n:], "0") {
		return errors.New("fractional part ends in 0")
	}
	return nil
}

// Between returns a key strictly between a and b. "" stands for the start
// (as a) or the end (as b) of the list, so Between(last, "") appends and
// Between("", first) prepends.
func Between(a, b string) (string, error) {
	if a != "" {
		if err := Validate(a); err != nil {
			return "", fmt.Errorf("position: lower key %q: %w", a, err)
		}
	}
	if b != "" {
		if err := Validate(b); err != nil {
			return "", fmt.Errorf("position: upper key %q: %w", b, err)
		}
	}
	if a != "" && b != "" && a >= b {
		return "", ErrOrder
	}
	key, err := between(a, b)
	if err != nil {
		return "", err
	}
	if len(key) > MaxKeyLength {
		return "", ErrExhausted
	}
	return key, nil
}

func between(a, b string) (string, error) {
	switch {
	case a == "" && b == "":
		return First, nil
	case a == "":
		ib := b[:integerLength(b[0])]
		fb := b[len(ib):]
		if ib == smallestInteger {
			return ib + midpoint("", fb), nil
		}
		if ib < b {
			return ib, nil
		}
		res, ok := decrementInteger(ib)
		if !ok {
			return "", ErrExhausted
		}
		if res == smallestInteger {
			// Not a key by itself; any fraction after it is.
			return res + midpoint("", ""), nil
		}
		return res, nil
	case b == "":
		ia := a[:integerLength(a[0])]
		fa := a[len(ia):]
		if i, ok := incrementInteger(ia); ok {
			return i, nil
		}
		return ia + midpoint(fa, ""), nil
	}
	ia := a[:integerLength(a[0])]
	fa := a[len(ia):]
	ib := b[:integerLength(b[0])]
	fb := b[len(ib):]
	if ia == ib {
		return ia + midpoint(fa, fb), nil
	}
	i, ok := incrementInteger(ia)
	if !ok {
		return "", ErrExhausted
	}
	if i < b {
		return i, nil
	}
	return ia + midpoint(fa, ""), nil
}

// midpoint returns a fractional part strictly between a and b ("" as b means
// no upper bound). Neither ends in '0', and a < b when b is set.
func midpoint(a, b string) string {
	if b != "" {
		n := 0
		for n < len(b) && digitAt(a, n) == b[n] {
			n++
		}
		if n > 0 {
			return b[:n] + midpoint(a[min(n, len(a)):], b[n:])
		}
	}
	da := 0
	if a != "" {
		da = strings.IndexByte(digits, a[0])
	}
	db := len(digits)
	if b != "" {
		db = strings.IndexByte(digits, b[0])
	}
	if db-da > 1 {
		return string(digits[(da+db+1)/2])
	}
	if len(b) > 1 {
		return b[:1]
	}
	rest := ""
	if a != "" {
		rest = a[1:]
	}
	return string(digits[da]) + midpoint(rest, "")
}

func digitAt(s string, i int) byte {
	if i < len(s) {
		return s[i]
	}
	return '0'
}

// integerLength is the length of the integer part that head starts: 'a'..'z'
// for 1..26 digits (non-negative), 'Z'..'A' for 1..26 digits (negative).
func integerLength(head byte) int {
	switch {
	case head >= 'a' && head <= 'z':
		return int(head-'a') + 2
	case head >= 'A' && head <= 'Z':
		return int('Z'-head) + 2
	}
	return 0
}

func incrementInteger(x string) (string, bool) {
	head, digs := x[0], []byte(x[1:])
	carry := true
	for i := len(digs) - 1; carry && i >= 0; i-- {
		d := strings.IndexByte(digits, digs[i]) + 1
		if d == len(digits) {
			digs[i] = '0'
		} else {
			digs[i] = digits[d]
			carry = false
		}
	}
	if !carry {
		return string(head) + string(digs), true
	}
	switch head {
	case 'Z':
		return "a0", true
	case 'z':
		return "", false
	}
	h := head + 1
	if h > 'a' {
		digs = append(digs, '0')
	} else {
		digs = digs[:len(digs)-1]
	}
	return string(h) + string(digs), true
}

func decrementInteger(x string) (string, bool) {
	head, digs := x[0], []byte(x[1:])
	borrow := true
	for i := len(digs) - 1; borrow && i >= 0; i-- {
		d := strings.IndexByte(digits, digs[i]) - 1
		if d == -1 {
			digs[i] = digits[len(digits)-1]
		} else {
			digs[i] = digits[d]
			borrow = false
		}
	}
	if !borrow {
		return string(head) + string(digs), true
	}
	switch head {
	case 'a':
		return "Z" + string(digits[len(digits)-1]), true
	case 'A':
		return "", false
	}
	h := head - 1
	if h < 'Z' {
		digs = append(digs, digits[len(digits)-1])
	} else {
		digs = digs[:len(digs)-1]
	}
	return string(h) + string(digs), true
}
