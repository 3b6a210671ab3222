package node

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/content"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	"meshkit.dev/meshkit/trust"
	"meshkit.dev/meshkit/wasm"
)

// Extension states, as reported in status and to seeds.
const (
	ExtAdmitted    = "admitted"
	ExtRejected    = "rejected"
	ExtUnavailable = "unavailable"
)

// DefaultArtifactWait is how long a new bundle waits for the artifacts it references
// before it is offered anyway, with the missing extensions handled by their failure
// policy: a slow or failed fetch never holds back unrelated configuration for longer.
const DefaultArtifactWait = 10 * time.Second

// ExtensionStatus is the agent's verdict on one artifact.
type ExtensionStatus struct {
	Artifact string   `json:"artifact"`
	ABI      string   `json:"abi,omitempty"`
	Bindings []string `json:"bindings"`
	State    string   `json:"state"`
	Reasons  []string `json:"reasons,omitempty"`
	// AdmitMillis is how long admission took (compile, checks, bounded start).
	AdmitMillis float64 `json:"admit_ms,omitempty"`
}

// artifactKey is one admission: the same module with another ABI or configuration is
// admitted again (proxy_on_configure sees the configuration).
type artifactKey struct {
	cid    string
	abi    string
	config [32]byte
}

type artifactVerdict struct {
	state   string
	reasons []string
	admit   time.Duration
}

// extensions fetches, verifies and admits the artifacts of held bundles and decides what
// of each bundle is offered to the data plane.
type extensions struct {
	a        *Agent
	store    *content.Store
	fetcher  *content.Fetcher
	server   *content.Server
	admitter *wasm.Admitter
	wait     time.Duration

	mu       sync.Mutex
	verdicts map[artifactKey]artifactVerdict
	pending  map[string]*heldBundle // variant -> bundle waiting for its artifacts
	kick     chan struct{}
}

func newExtensions(a *Agent, store *content.Store) *extensions {
	wait := a.cfg.ArtifactWait
	if wait <= 0 {
		wait = DefaultArtifactWait
	}
	x := &extensions{
		a: a, store: store, wait: wait,
		fetcher:  content.NewFetcher(a.cfg.Host, a.cfg.Root.Domain(), store, content.FetchConfig{Logger: a.log}),
		server:   content.Serve(a.cfg.Host, a.cfg.Root.Domain(), store, content.ServerConfig{Logger: a.log, Allow: a.contentAllowed}),
		admitter: wasm.NewAdmitter(a.cfg.Admission),
		verdicts: map[artifactKey]artifactVerdict{}, pending: map[string]*heldBundle{}, kick: make(chan struct{}, 1),
	}
	return x
}

// artifacts lists the bindings of b that reference an artifact.
// artifacts returns the extension bindings of h that reference an artifact. Most bundles
// have none, and they are not decoded to find that out: this runs after every accept and
// on every artifact collection, and decoding a large bundle there was a sixth of what a
// 64 KiB publish cost each agent. A bundle that does not decode has none usable.
func artifactsOf(h *heldBundle) []*bundlev1.ExtensionBinding {
	if !bundle.HasExtensionBindings(h.Verified.Payload) {
		return nil
	}
	b, err := h.Decoded()
	if err != nil {
		return nil
	}
	var out []*bundlev1.ExtensionBinding
	for _, eb := range b.GetExtensionBindings() {
		if eb.GetExtension().GetArtifact() != "" {
			out = append(out, eb)
		}
	}
	return out
}

func keyOf(eb *bundlev1.ExtensionBinding) artifactKey {
	return artifactKey{cid: eb.GetExtension().GetArtifact(), abi: eb.GetExtension().GetAbi(), config: sha256.Sum256([]byte(eb.GetSpec().GetConfig()))}
}

// Offer implements replica.OfferPolicy: it decides what of h is offered now. A bundle
// without artifacts is offered at once; otherwise it waits for the resolver.
func (x *extensions) Offer(h *heldBundle) {
	x.a.held()
	if h.Verified.Source == trust.ControlSource {
		x.a.controlOffered(h)
		return
	}
	if h.Verified.Source != "" {
		// Only the seeds' stream is offered to the data plane. A bridge's stream is held,
		// persisted and relayed beside it under its own (epoch, version) order, so it can
		// neither replace nor block what the seeds publish.
		return
	}
	if len(artifactsOf(h)) == 0 {
		x.a.setOffer(h)
		return
	}
	x.mu.Lock()
	if p := x.pending[h.Key()]; p == nil || p.Seq < h.Seq {
		x.pending[h.Key()] = h
	}
	x.mu.Unlock()
	select {
	case x.kick <- struct{}{}:
	default:
	}
}

// loop resolves pending bundles until ctx ends.
func (x *extensions) loop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-x.kick:
		}
		x.mu.Lock()
		todo := x.pending
		x.pending = map[string]*heldBundle{}
		x.mu.Unlock()
		var wg sync.WaitGroup
		for _, h := range todo {
			wg.Go(func() { x.resolve(ctx, h) })
		}
		wg.Wait()
	}
}

// resolve fetches and admits h's artifacts (waiting at most x.wait), then offers h with
// every extension that is not admitted handled by its failure policy. Fetches that did
// not finish go on; when they do, h is offered again.
func (x *extensions) resolve(ctx context.Context, h *heldBundle) {
	bindings := artifactsOf(h)
	keys := map[artifactKey]*bundlev1.ExtensionBinding{}
	for _, eb := range bindings {
		keys[keyOf(eb)] = eb
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	for k, eb := range keys {
		if _, ok := x.verdict(k); ok {
			continue
		}
		wg.Go(func() { x.fetchAndAdmit(ctx, k, eb) })
	}
	go func() { wg.Wait(); close(done) }()
	timer := x.a.clock.NewTimer(x.wait)
	defer timer.Stop()
	late := false
	select {
	case <-done:
	case <-timer.Chan():
		late = true
	case <-ctx.Done():
		return
	}
	x.offerResolved(h)
	if late {
		// Offer again once every fetch has ended (admitted, rejected or given up).
		select {
		case <-done:
			x.offerResolved(h)
		case <-ctx.Done():
		}
	}
}

func (x *extensions) verdict(k artifactKey) (artifactVerdict, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	v, ok := x.verdicts[k]
	return v, ok && v.state != ExtUnavailable
}

func (x *extensions) record(k artifactKey, v artifactVerdict) {
	x.mu.Lock()
	x.verdicts[k] = v
	x.mu.Unlock()
	x.a.kickReport()
}

// fetchAndAdmit gets the artifact from peers (seeds last), checks it against its CID and
// the signed size, and admits Wasm modules.
func (x *extensions) fetchAndAdmit(ctx context.Context, k artifactKey, eb *bundlev1.ExtensionBinding) {
	ext := eb.GetExtension()
	c, err := content.Parse(ext.GetArtifact())
	if err != nil {
		x.record(k, artifactVerdict{state: ExtRejected, reasons: []string{"artifact: " + err.Error()}})
		return
	}
	fctx, cancel := context.WithTimeout(ctx, x.a.cfg.artifactTimeout())
	defer cancel()
	x.record(k, artifactVerdict{state: ExtUnavailable, reasons: []string{"fetching"}})
	if err := x.fetcher.Fetch(fctx, c, int64(ext.GetSize()), content.Sources{Peers: x.a.agentPeers, Fallback: x.a.seedPeers()}); err != nil {
		x.a.log.Warn("extension artifact unavailable", "artifact", c, "err", err)
		x.record(k, artifactVerdict{state: ExtUnavailable, reasons: []string{err.Error()}})
		return
	}
	if ext.GetKind() != bundlev1.ExtensionKind_EXTENSION_KIND_WASM {
		x.record(k, artifactVerdict{state: ExtAdmitted})
		return
	}
	module, err := x.store.Get(c)
	if err != nil {
		x.record(k, artifactVerdict{state: ExtUnavailable, reasons: []string{err.Error()}})
		return
	}
	v := x.admitter.Admit(ctx, wasm.Request{ABI: ext.GetAbi(), Module: module, PluginConfig: []byte(eb.GetSpec().GetConfig())})
	av := artifactVerdict{state: ExtAdmitted, admit: v.Compile + v.Init}
	if !v.Accepted {
		av.state = ExtRejected
		for _, r := range v.Reasons {
			av.reasons = append(av.reasons, r.String())
		}
		x.a.log.Warn("extension rejected", "artifact", c, "abi", ext.GetAbi(), "err", v.Err())
	}
	x.a.metrics.admissions.WithLabelValues(av.state).Inc()
	x.record(k, av)
}

// offerResolved offers h with every binding whose artifact is not admitted dropped by its
// failure policy, if h is still the newest of its variant.
func (x *extensions) offerResolved(h *heldBundle) {
	b, _ := h.Decoded()
	out := proto.Clone(b).(*bundlev1.Bundle)
	bundle.DropExtensions(out, func(eb *bundlev1.ExtensionBinding) string {
		if eb.GetExtension().GetArtifact() == "" {
			return ""
		}
		x.mu.Lock()
		v, ok := x.verdicts[keyOf(eb)]
		x.mu.Unlock()
		switch {
		case ok && v.state == ExtAdmitted:
			return ""
		case ok && v.state == ExtRejected:
			return fmt.Sprintf("extension %q rejected by admission: %s", eb.GetSpec().GetExtension(), joinReasons(v.reasons))
		default:
			return fmt.Sprintf("extension %q unavailable: its artifact %s was not fetched", eb.GetSpec().GetExtension(), eb.GetExtension().GetArtifact())
		}
	})
	payload, err := bundle.Encode(out)
	if err != nil {
		x.a.log.Error("encode offered bundle", "err", err)
		return
	}
	// What is offered is named by its own digest, not the signed bundle's: each change of
	// it (an artifact admitted after the wait) is then new to the watch streams, and resume
	// tokens and deltas name the bytes the data plane holds.
	if x.a.rep.Current(h.Key()) == h { // still the newest of its stream
		x.a.setOffer(h.Derived(payload))
	}
}

func joinReasons(rs []string) string {
	if len(rs) == 0 {
		return "no reason given"
	}
	return strings.Join(rs, "; ")
}

// status lists the verdicts of the artifacts the held bundles reference.
func (x *extensions) status(held []*heldBundle) []ExtensionStatus {
	byKey := map[artifactKey]*ExtensionStatus{}
	for _, h := range held {
		for _, eb := range artifactsOf(h) {
			k := keyOf(eb)
			st, ok := byKey[k]
			if !ok {
				st = &ExtensionStatus{Artifact: k.cid, ABI: k.abi, State: ExtUnavailable, Reasons: []string{"not fetched yet"}}
				x.mu.Lock()
				if v, ok := x.verdicts[k]; ok {
					st.State, st.Reasons, st.AdmitMillis = v.state, v.reasons, float64(v.admit.Microseconds())/1000
				}
				x.mu.Unlock()
				byKey[k] = st
			}
			name := eb.GetMetadata().GetNamespace() + "/" + eb.GetMetadata().GetName()
			if !slices.Contains(st.Bindings, name) {
				st.Bindings = append(st.Bindings, name)
			}
		}
	}
	out := make([]ExtensionStatus, 0, len(byKey))
	for _, st := range byKey {
		sort.Strings(st.Bindings)
		out = append(out, *st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Artifact+out[i].ABI < out[j].Artifact+out[j].ABI })
	return out
}

func (x *extensions) report(sts []ExtensionStatus) []*syncv1.ExtensionVerdict {
	var out []*syncv1.ExtensionVerdict
	for _, st := range sts {
		out = append(out, &syncv1.ExtensionVerdict{Artifact: st.Artifact, Abi: st.ABI, State: st.State, Reasons: st.Reasons})
	}
	return out
}

// serveArtifact hands the data plane the bytes of an admitted artifact (GET
// /artifacts/{cid}); nothing that was not admitted is ever served.
func (x *extensions) serveArtifact(w http.ResponseWriter, r *http.Request) {
	c, err := content.Parse(r.PathValue("cid"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	admitted := false
	x.mu.Lock()
	for k, v := range x.verdicts {
		if k.cid == c.String() && v.state == ExtAdmitted {
			admitted = true
		}
	}
	x.mu.Unlock()
	if !admitted {
		http.Error(w, fmt.Sprintf("artifact %s is not admitted on this node", c), http.StatusNotFound)
		return
	}
	b, err := x.store.Get(c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/wasm")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	_, _ = w.Write(b)
}

// gc frees blobs no held bundle references.
func (x *extensions) gc() {
	refs := map[string]bool{}
	for _, h := range x.a.rep.View().Held {
		for _, eb := range artifactsOf(h) {
			refs[eb.GetExtension().GetArtifact()] = true
		}
	}
	if r, err := x.store.GC(func(c cid.Cid) bool { return refs[c.String()] }); err == nil && r.Removed > 0 {
		x.a.log.Info("artifacts collected", "removed", r.Removed, "freed_bytes", r.Freed)
	}
}

// agentPeers are the connected peers that are not seeds (asked first for artifacts).
func (a *Agent) agentPeers() []peer.ID {
	var out []peer.ID
	for _, p := range a.cfg.Host.Network().Peers() {
		if !slices.ContainsFunc(a.cfg.Bootstrap, func(b peer.AddrInfo) bool { return b.ID == p }) {
			out = append(out, p)
		}
	}
	return out
}

// seedPeers are the bootstrap peers: asked for artifacts only when no agent has them.
func (a *Agent) seedPeers() []peer.ID {
	out := make([]peer.ID, 0, len(a.cfg.Bootstrap))
	for _, ai := range a.cfg.Bootstrap {
		out = append(out, ai.ID)
	}
	return out
}
