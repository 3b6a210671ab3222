package seed

import (
	"context"
	"fmt"
	"sync"

	"meshkit.dev/meshkit/content"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/wasm"
)

// ArtifactChecker decides whether the artifact an Extension names may be declared. The
// seed asks it for every Extension an apply adds or changes, dry runs included.
type ArtifactChecker interface {
	CheckArtifact(ctx context.Context, ext *bundlev1.ExtensionSpec) error
}

// StoreAdmission checks Extensions against the seed's content store (what its registry
// holds): the artifact must be there, of the declared size, and a Wasm module must pass the
// same admission every agent runs (package wasm), so that an operator learns at apply time,
// with the reason, what every agent would otherwise refuse. DSL and native artifacts are
// checked for presence only. Verdicts are cached by artifact and ABI (a module is immutable
// under its CID).
type StoreAdmission struct {
	store    *content.Store
	admitter *wasm.Admitter

	mu       sync.Mutex
	verdicts map[admissionKey]error
}

type admissionKey struct{ artifact, abi string }

// maxAdmissionVerdicts bounds the cache; it is cleared when full.
const maxAdmissionVerdicts = 1024

// NewStoreAdmission checks artifacts in store, admitting Wasm with admitter.
func NewStoreAdmission(store *content.Store, admitter *wasm.Admitter) *StoreAdmission {
	return &StoreAdmission{store: store, admitter: admitter, verdicts: map[admissionKey]error{}}
}

var _ ArtifactChecker = (*StoreAdmission)(nil)

// CheckArtifact implements ArtifactChecker.
func (a *StoreAdmission) CheckArtifact(ctx context.Context, ext *bundlev1.ExtensionSpec) error {
	c, err := content.Parse(ext.GetArtifact())
	if err != nil {
		return fmt.Errorf("spec.artifact: %v", err)
	}
	size, ok := a.store.Has(c)
	if !ok {
		return fmt.Errorf("spec.artifact: %s is not in the seed's registry: push it first (meshkit ext push, or oras push and use `meshkit ext cid FILE`)", c)
	}
	if ext.GetSize() != 0 && uint64(size) != ext.GetSize() {
		return fmt.Errorf("spec.size: %d, but the artifact %s is %d bytes", ext.GetSize(), c, size)
	}
	if ext.GetKind() != bundlev1.ExtensionKind_EXTENSION_KIND_WASM {
		return nil
	}
	key := admissionKey{artifact: c.String(), abi: ext.GetAbi()}
	a.mu.Lock()
	verdict, seen := a.verdicts[key]
	a.mu.Unlock()
	if seen {
		return verdict
	}
	module, err := a.store.Get(c)
	if err != nil {
		return fmt.Errorf("spec.artifact: reading %s: %v", c, err)
	}
	if v := a.admitter.Admit(ctx, wasm.Request{ABI: ext.GetAbi(), Module: module}); !v.Accepted {
		verdict = fmt.Errorf("spec.artifact: %s would be refused by every agent: %v", c, v.Err())
	}
	if ctx.Err() != nil {
		return ctx.Err() // a cancelled admission says nothing about the module
	}
	a.mu.Lock()
	if len(a.verdicts) >= maxAdmissionVerdicts {
		clear(a.verdicts)
	}
	a.verdicts[key] = verdict
	a.mu.Unlock()
	return verdict
}
