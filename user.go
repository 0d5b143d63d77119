package pm

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a Profile.
const (
	NameMaxRunes  = 200
	EmailMaxBytes = 254 // the longest address SMTP can carry (RFC 5321)
)

// Profile is what pm knows of a user of a tenant besides the id: the name
// and email claims of the tokens the user connects with. Empty means unknown.
type Profile struct {
	Name  string
	Email string
}

// Empty reports whether p knows nothing.
func (p Profile) Empty() bool { return p.Name == "" && p.Email == "" }

// NewProfile keeps the name and email claims of a token that are fit to
// show: trimmed, valid UTF-8 without control characters (NUL, newlines,
// bidirectional overrides), a name of at most NameMaxRunes characters, an
// email of at most EmailMaxBytes bytes with an @ between a local part and a
// domain and no spaces. A claim that is not fit becomes empty, as if it were
// absent: a token is never refused for its profile.
func NewProfile(name, email string) Profile {
	name, email = strings.TrimSpace(name), strings.TrimSpace(email)
	if !printable(name) || utf8.RuneCountInString(name) > NameMaxRunes {
		name = ""
	}
	at := strings.IndexByte(email, '@')
	if !printable(email) || len(email) > EmailMaxBytes || at < 1 || at == len(email)-1 ||
		strings.ContainsFunc(email, unicode.IsSpace) {
		email = ""
	}
	return Profile{Name: name, Email: email}
}

// printable reports whether s is valid UTF-8 without control characters,
// bidirectional controls (which could make a name show as another) included.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
	})
}
