package pm

import (
	"regexp"
	"time"

	"github.com/google/uuid"
)

// Role is a member's role in a project; each role includes the ones below it.
type Role string

// The roles, lowest first.
const (
	RoleViewer Role = "viewer" // subscribe and read
	RoleEditor Role = "editor" // also create, update and delete work items
	RoleAdmin  Role = "admin"  // also manage members
)

// Rank orders roles: viewer 1 < editor 2 < admin 3; 0 for none or unknown.
func (r Role) Rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleEditor:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.Rank() > 0 }

// Allows reports whether r may do what needs the role need.
func (r Role) Allows(need Role) bool { return r.Valid() && r.Rank() >= need.Rank() }

// Member is a user's role in a project, with what is known of the user.
type Member struct {
	ProjectID uuid.UUID
	UserID    uuid.UUID
	Role      Role
	AddedAt   time.Time
	AddedBy   uuid.UUID
	// Profile is the user's name and email in the tenant; empty while the
	// user has never connected with a token that carries them.
	Profile Profile
}

var tenantPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidTenant reports whether s can be a tenant id: 1..64 letters, digits,
// '_', '.' or '-', starting with a letter or digit. Tenant ids appear in Redis
// keys and channel names, so they never contain ':'.
func ValidTenant(s string) bool { return tenantPattern.MatchString(s) }
