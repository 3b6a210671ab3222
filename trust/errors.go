package trust

import (
	"errors"
	"fmt"
)

// Sentinel reasons a verification is refused. Every error returned by Verifier.Verify,
// VerifyRoot and Root.VerifyNext wraps exactly one of them.
var (
	ErrOversized    = errors.New("trust: oversized input")
	ErrMalformed    = errors.New("trust: malformed input")
	ErrPayloadType  = errors.New("trust: unknown payload type")
	ErrBadSignature = errors.New("trust: bad signature")
	ErrThreshold    = errors.New("trust: signatures below threshold")
	ErrUnknownKey   = errors.New("trust: unknown key")
	ErrKeyRole      = errors.New("trust: key used outside its role")
	ErrNamespace    = errors.New("trust: key used outside its namespace")
	ErrWrongDomain  = errors.New("trust: wrong domain")
	ErrRollback     = errors.New("trust: rollback")
	ErrReplay       = errors.New("trust: replay")
	ErrExpired      = errors.New("trust: expired")
	ErrNotYetValid  = errors.New("trust: not yet valid")
	ErrRootExpired  = errors.New("trust: root expired")
	ErrRootVersion  = errors.New("trust: root version out of order")
	ErrBaseMismatch = errors.New("trust: delta base does not match held bundle")
	ErrHashMismatch = errors.New("trust: content does not match its signed hash")
)

// reasons maps each sentinel to a stable label for metrics and status output.
var reasons = []struct {
	err   error
	label string
}{
	{ErrOversized, "oversized"},
	{ErrMalformed, "malformed"},
	{ErrPayloadType, "payload_type"},
	{ErrBadSignature, "bad_signature"},
	{ErrThreshold, "threshold"},
	{ErrUnknownKey, "unknown_key"},
	{ErrKeyRole, "key_role"},
	{ErrNamespace, "namespace"},
	{ErrWrongDomain, "wrong_domain"},
	{ErrRollback, "rollback"},
	{ErrReplay, "replay"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrRootExpired, "root_expired"},
	{ErrRootVersion, "root_version"},
	{ErrBaseMismatch, "base_mismatch"},
	{ErrHashMismatch, "hash_mismatch"},
}

// Reason returns the stable label of the sentinel err wraps ("bad_signature",
// "rollback", …), or "other" when err wraps none of them, or "" for nil.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}

// VerifyError is a refusal with the reason it was refused and the detail that explains it.
type VerifyError struct {
	// Reason is one of the Err… sentinels of this package.
	Reason error
	// Detail says what exactly was wrong, e.g. which key or which versions.
	Detail string
}

func (e *VerifyError) Error() string {
	if e.Detail == "" {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Detail
}

// Unwrap lets errors.Is match the sentinel.
func (e *VerifyError) Unwrap() error { return e.Reason }

func refuse(reason error, format string, args ...any) error {
	return &VerifyError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}
