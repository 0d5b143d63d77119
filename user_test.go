package pm_test

import (
	"strings"
	"testing"

	"github.com/pmhq/pm"
)

func TestNewProfile(t *testing.T) {
	longName := strings.Repeat("é", pm.NameMaxRunes)
	longEmail := strings.Repeat("a", pm.EmailMaxBytes-len("@x.example")) + "@x.example"
	tests := []struct {
		name       string
		claimName  string
		claimEmail string
		want       pm.Profile
	}{
		{"both", "Alice Adams", "alice@demo.test", pm.Profile{Name: "Alice Adams", Email: "alice@demo.test"}},
		{"none", "", "", pm.Profile{}},
		{"trimmed", "  Bob Brown\t", " bob@demo.test ", pm.Profile{Name: "Bob Brown", Email: "bob@demo.test"}},
		{"name at the limit", longName, "", pm.Profile{Name: longName}},
		{"name too long", longName + "x", "c@d.test", pm.Profile{Email: "c@d.test"}},
		{"email at the limit", "", longEmail, pm.Profile{Email: longEmail}},
		{"email too long", "Carol", "a" + longEmail, pm.Profile{Name: "Carol"}},
		{"NUL in name", "Car\x00ol", "c@d.test", pm.Profile{Email: "c@d.test"}},
		{"newline in name", "Carol\nClark", "", pm.Profile{}},
		{"bidi override in name", "Mallory \u202egnp.exe", "", pm.Profile{}},
		{"invalid UTF-8", "Car\xffol", "c\xff@d.test", pm.Profile{}},
		{"blank name", "   ", "", pm.Profile{}},
		{"email without @", "Dan", "dan.example", pm.Profile{Name: "Dan"}},
		{"email with a space", "", "d an@x.test", pm.Profile{}},
		{"email with @ at an end", "", "dan@", pm.Profile{}},
		{"unicode", "Zoë Ålund 李", "zoë@exämple.test", pm.Profile{Name: "Zoë Ålund 李", Email: "zoë@exämple.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pm.NewProfile(tt.claimName, tt.claimEmail); got != tt.want {
				t.Errorf("NewProfile(%q, %q) = %+v, want %+v", tt.claimName, tt.claimEmail, got, tt.want)
			}
		})
	}
}
