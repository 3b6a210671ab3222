package node

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is what `meshkit agent status` prints.
type Status struct {
	Domain string   `json:"domain"`
	PeerID string   `json:"peer_id"`
	Addrs  []string `json:"addrs,omitempty"`
	Peers  int      `json:"peers"`
	// AdmittedPeers are the connected peers whose certificates of the domain verified
	// (with Config.RequirePeerCertificates): the only ones in its mesh.
	AdmittedPeers []string `json:"admitted_peers,omitempty"`
	// CertificatesRefused counts the peer certificates the agent refused (expired,
	// revoked, of another CA, naming another peer): peers kept out of its mesh.
	CertificatesRefused uint64 `json:"certificates_refused,omitempty"`
	// RootVersion is the domain root in force: the configured one, or the newest the
	// control stream's rotations led to.
	RootVersion uint64 `json:"root_version"`
	// ControlVersion is the version of the control message held (trust bundle and
	// revocations); 0 before one arrived.
	ControlVersion uint64 `json:"control_version,omitempty"`
	// Serving is the bundle handed to the data plane (zero when none is held).
	Serving HeadStatus `json:"serving"`
	// Held lists the newest bundle of every variant the agent keeps and relays, and the
	// control message it holds (variant "control|").
	Held        []HeadStatus `json:"held"`
	Stale       bool         `json:"stale"`
	StaleReason string       `json:"stale_reason,omitempty"`
	LastAccept  time.Time    `json:"last_accept,omitzero"`
	AgeSeconds  float64      `json:"age_seconds"`
	BytesIn     uint64       `json:"bytes_in"`
	BytesOut    uint64       `json:"bytes_out"`
	PersistErr  string       `json:"persist_error,omitempty"`
	// SyncBanned lists the peers anti-entropy does not ask for now: each claimed a head it
	// did not deliver.
	SyncBanned []string `json:"sync_banned,omitempty"`
	// Accepted counts adopted bundles by source (gossip, sync, lkg).
	Accepted map[string]uint64 `json:"accepted"`
	// Rejected counts refused bundles, deltas and announces by reason (replay, rollback,
	// bad_signature, expired, oversized, ...).
	Rejected map[string]uint64 `json:"rejected"`
	// Nacks counts, per version, the data-plane clients that refused it.
	Nacks []NackStatus `json:"nacks,omitempty"`
	// Extensions are the verdicts on the artifacts the held bundles reference.
	Extensions []ExtensionStatus `json:"extensions,omitempty"`
	// Identity is the agent's enrolment and own certificate; nil when not enrolled.
	Identity *IdentityStatus `json:"identity,omitempty"`
}

// NackStatus is how often one version was NACKed by data-plane clients.
type NackStatus struct {
	Version   uint64 `json:"version"`
	Count     uint64 `json:"count"`
	LastError string `json:"last_error"`
}

// HeadStatus describes one held bundle.
type HeadStatus struct {
	Variant   string    `json:"variant"`
	Epoch     uint64    `json:"epoch"`
	Version   uint64    `json:"version"`
	Hash      string    `json:"hash,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	FromLKG   bool      `json:"from_lkg,omitempty"`
}

// Status reports the agent's state.
func (a *Agent) Status() Status {
	view := a.rep.View() // the replica's lock is never taken under the agent's
	s := Status{Domain: a.cfg.Root.Domain(), LastAccept: view.LastAccept, SyncBanned: view.SyncBanned, Accepted: view.Accepted, Rejected: view.Rejected}
	if !view.LastAccept.IsZero() {
		s.AgeSeconds = a.clock.Now().Sub(view.LastAccept).Seconds()
	}
	if view.PersistErr != nil {
		s.PersistErr = view.PersistErr.Error()
	}
	for _, h := range view.Held {
		s.Held = append(s.Held, headStatus(h))
	}
	s.Extensions = a.ext.status(view.Held)
	s.Identity = a.identityStatus()
	a.mu.Lock()
	s.StaleReason = a.staleReasonLocked(view.LastAccept)
	s.Stale = s.StaleReason != ""
	for _, v := range slices.Sorted(maps.Keys(a.nacks)) {
		n := a.nacks[v]
		s.Nacks = append(s.Nacks, NackStatus{Version: n.GetVersion(), Count: n.GetCount(), LastError: n.GetLastError()})
	}
	if h := a.servingLocked(); h != nil {
		s.Serving = headStatus(h)
	}
	a.mu.Unlock()
	slices.SortFunc(s.Held, func(x, y HeadStatus) int { return strings.Compare(x.Variant, y.Variant) })
	if a.rep != nil {
		n := a.rep.Node()
		s.PeerID = n.ID().String()
		s.Addrs = addrStrings(a.cfg.Host)
		s.Peers = len(n.Peers())
		if a.cfg.RequirePeerCertificates {
			for _, p := range n.Peers() {
				if n.Admitted(p) {
					s.AdmittedPeers = append(s.AdmittedPeers, p.String())
				}
			}
			slices.Sort(s.AdmittedPeers)
		}
		s.RootVersion, s.ControlVersion = a.RootVersion(), a.ControlVersion()
		s.CertificatesRefused = n.CertificatesRefused()
		t := n.Traffic()
		s.BytesIn, s.BytesOut = t.BytesIn, t.BytesOut
	}
	return s
}

func headStatus(h *heldBundle) HeadStatus {
	hdr := h.Verified.Header
	return HeadStatus{
		Variant: h.Verified.Variant, Epoch: hdr.GetEpoch(), Version: hdr.GetVersion(), Hash: h.Verified.Held.String(),
		ExpiresAt: hdr.GetExpiresAt().AsTime().UTC(), FromLKG: h.FromCache,
	}
}

// Handler serves /healthz (the process runs), /readyz (a verified bundle is held and
// served; 503 before that), /status (JSON) and /metrics (Prometheus).
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s := a.Status()
		w.Header().Set("Content-Type", "application/json")
		// Serving matters to readiness; persisting is reported beside it: an agent whose
		// disk refuses writes still serves, but would restart without what it holds now.
		body := map[string]any{"ready": s.Serving.Version > 0, "stale": s.Stale, "stale_reason": s.StaleReason, "version": s.Serving.Version,
			"persisting": s.PersistErr == ""}
		if s.PersistErr != "" {
			body["persist_error"] = s.PersistErr
		}
		if s.Serving.Version == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.Status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /artifacts/{cid}", a.ext.serveArtifact)
	return mux
}
