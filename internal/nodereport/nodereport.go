// Package nodereport bounds the reports agents send their seeds (NACK counts and
// extension verdicts): the agent cleans what it sends to fit, and the seed refuses
// anything that does not, since a report is one peer's unauthenticated word.
package nodereport

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"meshkit.dev/meshkit/content"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

// Bounds of one report, checked field by field so that what a seed keeps and `meshkit
// status` prints is small and plain text.
const (
	MaxNacks      = 16
	MaxExtensions = 64
	MaxReasons    = 4
	MaxText       = 256
	MaxCount      = 1_000_000 // data-plane clients of one agent
	MaxABI        = 64
)

var reportStates = []string{"admitted", "rejected", "unavailable"}

// Check refuses a report with any field out of bounds, saying which.
func Check(r *syncv1.NodeReport) error {
	if n := len(r.GetNacks()); n > MaxNacks {
		return fmt.Errorf("%d NACK entries, the limit is %d", n, MaxNacks)
	}
	for i, n := range r.GetNacks() {
		if n.GetCount() == 0 || n.GetCount() > MaxCount {
			return fmt.Errorf("nacks[%d].count %d is not between 1 and %d", i, n.GetCount(), MaxCount)
		}
		if err := plainText(n.GetLastError()); err != nil {
			return fmt.Errorf("nacks[%d].last_error: %w", i, err)
		}
	}
	if n := len(r.GetExtensions()); n > MaxExtensions {
		return fmt.Errorf("%d extension verdicts, the limit is %d", n, MaxExtensions)
	}
	for i, e := range r.GetExtensions() {
		if _, err := content.Parse(e.GetArtifact()); err != nil {
			return fmt.Errorf("extensions[%d].artifact: %w", i, err)
		}
		if len(e.GetAbi()) > MaxABI || !isToken(e.GetAbi()) {
			return fmt.Errorf("extensions[%d].abi %q is not an ABI name", i, e.GetAbi())
		}
		if !slices.Contains(reportStates, e.GetState()) {
			return fmt.Errorf("extensions[%d].state %q is not one of %v", i, e.GetState(), reportStates)
		}
		if n := len(e.GetReasons()); n > MaxReasons {
			return fmt.Errorf("extensions[%d]: %d reasons, the limit is %d", i, n, MaxReasons)
		}
		for j, reason := range e.GetReasons() {
			if err := plainText(reason); err != nil {
				return fmt.Errorf("extensions[%d].reasons[%d]: %w", i, j, err)
			}
		}
	}
	return nil
}

// plainText refuses text that is too long, not UTF-8, or holds control characters (which
// a terminal would act on when an operator prints it).
func plainText(s string) error {
	if len(s) > MaxText {
		return fmt.Errorf("%d bytes, the limit is %d", len(s), MaxText)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("not UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			return fmt.Errorf("control character %U", r)
		}
	}
	return nil
}

// isToken reports whether s is made of the characters of ABI names ("proxy-wasm/0.2.1").
func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '/' || r == '_') {
			return false
		}
	}
	return s != ""
}

// Clean makes r fit the bounds Check enforces: an agent's own report can carry text from
// its data-plane clients (a NACK's error detail) that it does not control. Entries beyond a
// bound are dropped (the first ones kept), text is cut to MaxText at a character boundary,
// and control characters and invalid bytes become '?'. It changes r's messages but never
// writes into a slice r shares with its builder: reasons are copied before they are
// cleaned.
func Clean(r *syncv1.NodeReport) {
	r.Nacks = r.Nacks[:min(len(r.Nacks), MaxNacks)]
	for _, n := range r.GetNacks() {
		n.Count = max(1, min(n.GetCount(), MaxCount))
		n.LastError = cleanText(n.GetLastError())
	}
	r.Extensions = r.Extensions[:min(len(r.Extensions), MaxExtensions)]
	for _, e := range r.GetExtensions() {
		reasons := make([]string, 0, min(len(e.Reasons), MaxReasons))
		for _, reason := range e.Reasons[:cap(reasons)] {
			reasons = append(reasons, cleanText(reason))
		}
		e.Reasons = reasons
	}
}

func cleanText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) || r == utf8.RuneError {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > MaxText {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}
