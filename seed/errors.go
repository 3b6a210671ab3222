package seed

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of refusal a seed gives. Every refusal wraps one (errors.Is); the admin API
// maps each to a gRPC code, and the HTTP gateway to a status, in one place: GRPCStatus.
var (
	ErrInvalid         = errors.New("invalid")
	ErrNotFound        = errors.New("not found")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
	// ErrConflict: the request is valid but the state does not allow it (a resource still
	// referenced, nothing published yet).
	ErrConflict    = errors.New("conflict")
	ErrUnavailable = errors.New("unavailable")
	// ErrCorrupt: stored data failed verification.
	ErrCorrupt  = errors.New("corrupt")
	ErrInternal = errors.New("internal")
)

var codeOf = map[error]codes.Code{
	ErrInvalid:         codes.InvalidArgument,
	ErrNotFound:        codes.NotFound,
	ErrUnauthenticated: codes.Unauthenticated,
	ErrForbidden:       codes.PermissionDenied,
	ErrConflict:        codes.FailedPrecondition,
	ErrUnavailable:     codes.Unavailable,
	ErrCorrupt:         codes.DataLoss,
	ErrInternal:        codes.Internal,
}

// Error is a seed's refusal: a kind and a message for the caller.
type Error struct {
	kind error
	msg  string
}

func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind.
func (e *Error) Unwrap() error { return e.kind }

// GRPCStatus renders the refusal for gRPC (status.FromError and the server use it).
func (e *Error) GRPCStatus() *status.Status {
	c, ok := codeOf[e.kind]
	if !ok {
		c = codes.Unknown
	}
	return status.New(c, e.msg)
}

// refuse returns a refusal of kind with a formatted message.
func refuse(kind error, format string, args ...any) error {
	return &Error{kind: kind, msg: fmt.Sprintf(format, args...)}
}
