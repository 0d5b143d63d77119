package pm

import (
	"errors"
	"fmt"
)

// Error codes, sent to clients as Error.code.
const (
	EValidation    = "VALIDATION_ERROR" // a field is missing, malformed or out of range
	EInvalid       = "INVALID_MESSAGE"  // the frame could not be decoded or has no known payload
	EUnauthorized  = "UNAUTHORIZED"     // the caller's role does not allow the operation
	ENotFound      = "NOT_FOUND"        // no such item or project in the caller's tenant
	EConflict      = "CONFLICT"         // expected_version is stale, or an id is taken
	EDeleteBlocked = "DELETE_BLOCKED"   // the item still has live children
	ERateLimited   = "RATE_LIMITED"     // the connection sends faster than allowed
	EUnavailable   = "UNAVAILABLE"      // a dependency is slow or down; retrying may succeed
	EInternal      = "INTERNAL"         // a bug or an unexpected failure
)

// Error is a failure a client may see: a code from the list above, a message
// safe to show, and the request field to blame, if any. Internal causes are
// wrapped with fmt.Errorf around it, never put in Message.
type Error struct {
	Code    string
	Message string
	Field   string
	// CurrentVersion is the item's version, for CONFLICT on a stale version.
	CurrentVersion int64
	// RetryAfterMillis suggests when to retry, for RATE_LIMITED and UNAVAILABLE.
	RetryAfterMillis int64
}

// Error implements the error interface.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("pm error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("pm error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns a VALIDATION_ERROR that blames field.
func FieldErrorf(field, format string, args ...any) *Error {
	return &Error{Code: EValidation, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the *Error in err's chain, INTERNAL for any
// other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Code
	}
	return EInternal
}

// AsError returns the *Error in err's chain, or an INTERNAL *Error with a
// generic message when there is none, so that internal details never reach a
// client. It returns nil for nil.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	return &Error{Code: EInternal, Message: "internal error"}
}
