package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	southboundv1 "meshkit.dev/meshkit/proto/meshkit/southbound/v1"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
	"meshkit.dev/meshkit/trust"
)

// Southbound defaults and limits.
const (
	// DefaultSouthboundAddr is where an agent serves its data plane.
	DefaultSouthboundAddr = "127.0.0.1:17421"
	// DefaultBackoff is the retry hint sent with every response and error.
	DefaultBackoff = time.Second
	// UnsupportedBackoff is the hint sent with control.unsupported_capability (the contract's 5 s).
	UnsupportedBackoff = 5 * time.Second
	// DefaultMaxStreams bounds concurrent watch streams; more are refused UNAVAILABLE.
	DefaultMaxStreams = 10000
	maxNodeID         = 256
	maxCapabilities   = 64
	maxCapability     = 128
	// ErrCodeUnsupported is OmniRelay's error code for a capability mismatch.
	ErrCodeUnsupported = "control.unsupported_capability"
)

// SouthboundConfig configures the data-plane servers.
type SouthboundConfig struct {
	// TLS, when set, serves TLS (mTLS when it verifies client certificates); nil is h2c.
	TLS credentials.TransportCredentials
	// MaxStreams bounds concurrent watch streams. 0 means DefaultMaxStreams.
	MaxStreams int
}

// Southbound serves OmniRelay's omnirelay.control.ControlPlaneWatch and MeshKit's
// meshkit.southbound.v1 watch from the agent's verified bundles.
type Southbound struct {
	a       *Agent
	cfg     SouthboundConfig
	srv     *grpc.Server
	streams atomic.Int64
	closing chan struct{}
	once    sync.Once
}

// NewSouthbound returns the data-plane servers of a. Serve them with Serve; Close ends
// every watch with UNAVAILABLE and a backoff hint.
func (a *Agent) NewSouthbound(cfg SouthboundConfig) *Southbound {
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = DefaultMaxStreams
	}
	opts := []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(64 << 10), // clients send small requests only
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(cfg.TLS))
	}
	s := &Southbound{a: a, cfg: cfg, srv: grpc.NewServer(opts...), closing: make(chan struct{})}
	controlpb.RegisterControlPlaneWatchServer(s.srv, &controlServer{s: s})
	southboundv1.RegisterSouthboundServiceServer(s.srv, &meshServer{s: s})
	capb.RegisterCertificateAuthorityServer(s.srv, &caServer{s: s})
	return s
}

// Serve serves on ln until Close.
func (s *Southbound) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Close ends every watch with UNAVAILABLE and a backoff hint, then stops the server.
func (s *Southbound) Close() {
	s.once.Do(func() { close(s.closing) })
	done := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-s.a.clock.After(5 * time.Second):
		s.srv.Stop()
		<-done
	}
}

// Streams is the number of open watch streams.
func (s *Southbound) Streams() int { return int(s.streams.Load()) }

// admit counts a stream, refusing it when the agent is at MaxStreams or closing.
func (s *Southbound) admit(ctx context.Context) (release func(), err error) {
	select {
	case <-s.closing:
		return nil, unavailable(ctx, "the agent is shutting down")
	default:
	}
	if n := s.streams.Add(1); n > int64(s.cfg.MaxStreams) {
		s.streams.Add(-1)
		s.a.metrics.watchRefused.Inc()
		return nil, unavailable(ctx, fmt.Sprintf("the agent serves %d watch streams already; retry later", s.cfg.MaxStreams))
	}
	s.a.metrics.watchClients.Inc()
	return func() {
		s.streams.Add(-1)
		s.a.metrics.watchClients.Dec()
	}, nil
}

// unavailable ends a call with UNAVAILABLE and a backoff-ms trailer.
func unavailable(ctx context.Context, msg string) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs("backoff-ms", strconv.FormatInt(DefaultBackoff.Milliseconds(), 10)))
	return status.Error(codes.Unavailable, msg)
}

// checkNode validates what a client says about itself.
func checkNode(ctx context.Context, nodeID string, caps []string) error {
	bad := func(msg string) error {
		_ = grpc.SetTrailer(ctx, metadata.Pairs("backoff-ms", strconv.FormatInt(DefaultBackoff.Milliseconds(), 10)))
		return status.Error(codes.InvalidArgument, msg)
	}
	if len(nodeID) > maxNodeID {
		return bad(fmt.Sprintf("node_id is %d bytes; at most %d", len(nodeID), maxNodeID))
	}
	if len(caps) > maxCapabilities {
		return bad(fmt.Sprintf("%d capabilities; at most %d", len(caps), maxCapabilities))
	}
	for _, c := range caps {
		if c == "" || len(c) > maxCapability {
			return bad(fmt.Sprintf("capability %q is empty or longer than %d bytes", c, maxCapability))
		}
	}
	return nil
}

// variantFor picks the richest held variant whose required capabilities caps cover. With
// none, missing lists what the least demanding variant needs beyond caps (nil when
// nothing is held at all).
func (a *Agent) variantFor(caps []string) (h *heldBundle, missing []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	offered := slices.Collect(maps.Values(a.offered))
	if caps == nil {
		caps = []string{} // a client that advertises nothing gets what needs nothing
	}
	if i := richest(offered, caps); i >= 0 {
		return offered[i], nil
	}
	var least *heldBundle
	for _, c := range offered {
		if least == nil || len(c.Verified.Header.GetRequiredCapabilities()) < len(least.Verified.Header.GetRequiredCapabilities()) {
			least = c
		}
	}
	if least == nil {
		return nil, nil
	}
	for _, c := range least.Verified.Header.GetRequiredCapabilities() {
		if !slices.Contains(caps, c) {
			missing = append(missing, c)
		}
	}
	return nil, missing
}

// observeDelivery records the time from acceptance to delivery of h.
func (a *Agent) observeDelivery(h *heldBundle) {
	if !h.FromCache {
		a.metrics.watchDelivery.Observe(a.clock.Now().Sub(h.At).Seconds())
	}
}

// controlServer is omnirelay.control.ControlPlaneWatch.
type controlServer struct {
	controlpb.UnimplementedControlPlaneWatchServer
	s *Southbound
}

func backoff(d time.Duration) *controlpb.ControlBackoff {
	return &controlpb.ControlBackoff{Millis: d.Milliseconds()}
}

func versionString(v uint64) string { return strconv.FormatUint(v, 10) }

func resumeToken(h *heldBundle) *controlpb.WatchResumeToken {
	return &controlpb.WatchResumeToken{
		Version: versionString(h.Verified.Header.GetVersion()), Epoch: int64(h.Verified.Header.GetEpoch()), Opaque: slices.Clone(h.Verified.Held[:]),
	}
}

// current reports whether the client's resume token names h: same version and epoch
// (and, when the token carries one, the same bundle hash). A malformed token is treated
// as absent: the client gets a full snapshot.
func current(tok *controlpb.WatchResumeToken, h *heldBundle) bool {
	if tok == nil {
		return false
	}
	v, err := strconv.ParseUint(tok.GetVersion(), 10, 64)
	if err != nil || tok.GetEpoch() < 0 {
		return false
	}
	if v != h.Verified.Header.GetVersion() || uint64(tok.GetEpoch()) != h.Verified.Header.GetEpoch() {
		return false
	}
	return len(tok.GetOpaque()) == 0 || string(tok.GetOpaque()) == string(h.Verified.Held[:])
}

// Watch implements the OmniRelay contract: the current state first (full_snapshot unless
// the resume token names it), then every new bundle, each a complete payload; an
// unsupported capability set gets one error response and a non-OK end; the stream never
// ends with OK (UNAVAILABLE with a backoff hint on shutdown).
func (c *controlServer) Watch(req *controlpb.ControlWatchRequest, stream grpc.ServerStreamingServer[controlpb.ControlWatchResponse]) error {
	ctx := stream.Context()
	caps := req.GetCapabilities().GetItems()
	if err := checkNode(ctx, req.GetNodeId(), caps); err != nil {
		return err
	}
	release, err := c.s.admit(ctx)
	if err != nil {
		return err
	}
	defer release()
	a := c.s.a
	var sent trust.Digest
	first := true
	for {
		changed := a.Changed()
		h, missing := a.variantFor(caps)
		switch {
		case h == nil && missing != nil:
			a.metrics.unsupported.Inc()
			_ = stream.Send(&controlpb.ControlWatchResponse{
				Error: &controlpb.ControlError{
					Code:        ErrCodeUnsupported,
					Message:     fmt.Sprintf("no bundle of this domain fits capabilities %v: missing %v", caps, missing),
					Remediation: "upgrade the node to support the missing capabilities, or ask the domain's operators to stop using the features that need them",
				},
				RequiredCapabilities: missing,
				Backoff:              backoff(UnsupportedBackoff),
			})
			_ = grpc.SetTrailer(ctx, metadata.Pairs("error-code", ErrCodeUnsupported, "backoff-ms", strconv.FormatInt(UnsupportedBackoff.Milliseconds(), 10)))
			return status.Errorf(codes.FailedPrecondition, "%s: missing %v", ErrCodeUnsupported, missing)
		case h != nil && h.Verified.Held != sent:
			resp := &controlpb.ControlWatchResponse{
				Version: versionString(h.Verified.Header.GetVersion()), Epoch: int64(h.Verified.Header.GetEpoch()),
				FullSnapshot: true, ResumeToken: resumeToken(h), Backoff: backoff(DefaultBackoff),
				RequiredCapabilities: h.Verified.Header.GetRequiredCapabilities(),
			}
			if first && current(req.GetResumeToken(), h) {
				resp.FullSnapshot = false // the client holds it already: nothing to apply
			} else {
				resp.Payload = h.Verified.Payload
			}
			if err := stream.Send(resp); err != nil {
				return err
			}
			a.observeDelivery(h)
			sent, first = h.Verified.Held, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-c.s.closing:
			_ = stream.Send(&controlpb.ControlWatchResponse{
				Error:   &controlpb.ControlError{Code: "control.unavailable", Message: "the agent is shutting down", Remediation: "reconnect after the backoff"},
				Backoff: backoff(DefaultBackoff),
			})
			return unavailable(ctx, "the agent is shutting down")
		}
	}
}

// Snapshot returns the current payload for the client's capabilities.
func (c *controlServer) Snapshot(ctx context.Context, req *controlpb.ControlSnapshotRequest) (*controlpb.ControlSnapshotResponse, error) {
	caps := req.GetCapabilities().GetItems()
	if err := checkNode(ctx, req.GetNodeId(), caps); err != nil {
		return nil, err
	}
	h, missing := c.s.a.variantFor(caps)
	switch {
	case h == nil && missing != nil:
		_ = grpc.SetTrailer(ctx, metadata.Pairs("error-code", ErrCodeUnsupported, "backoff-ms", strconv.FormatInt(UnsupportedBackoff.Milliseconds(), 10)))
		return nil, status.Errorf(codes.FailedPrecondition, "%s: no bundle fits capabilities %v: missing %v", ErrCodeUnsupported, caps, missing)
	case h == nil:
		return nil, unavailable(ctx, "the agent holds no bundle yet")
	}
	return &controlpb.ControlSnapshotResponse{
		Version: versionString(h.Verified.Header.GetVersion()), Epoch: int64(h.Verified.Header.GetEpoch()),
		Payload: h.Verified.Payload, RequiredCapabilities: h.Verified.Header.GetRequiredCapabilities(),
	}, nil
}

// meshServer is meshkit.southbound.v1.SouthboundService.
type meshServer struct {
	southboundv1.UnimplementedSouthboundServiceServer
	s *Southbound
}

type pending struct {
	nonce string
	h     *heldBundle
}

// Watch sends per-resource changes relative to what the client last ACKed, one response
// in flight at a time; a NACKed version is counted (and reported to the seeds) and not
// sent again.
func (m *meshServer) Watch(stream grpc.BidiStreamingServer[southboundv1.WatchRequest, southboundv1.WatchResponse]) error {
	ctx := stream.Context()
	// Counted from the moment it opens: a stream that never sends its first request holds
	// a slot as surely as one that does.
	release, err := m.s.admit(ctx)
	if err != nil {
		return err
	}
	defer release()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	caps := first.GetCapabilities()
	if err := checkNode(ctx, first.GetNodeId(), caps); err != nil {
		return err
	}
	a := m.s.a

	reqs := make(chan *southboundv1.WatchRequest)
	recvErr := make(chan error, 1)
	go func() { // owned by this handler: it ends when the stream does, which Watch's return causes
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()

	var acked *heldBundle
	var inflight *pending
	nacked := map[trust.Digest]bool{}
	seq := 0
	for {
		changed := a.Changed()
		if inflight == nil {
			h, missing := a.variantFor(caps)
			if h == nil && missing != nil {
				a.metrics.unsupported.Inc()
				_ = grpc.SetTrailer(ctx, metadata.Pairs("error-code", ErrCodeUnsupported, "backoff-ms", strconv.FormatInt(UnsupportedBackoff.Milliseconds(), 10)))
				return status.Errorf(codes.FailedPrecondition, "%s: missing %v", ErrCodeUnsupported, missing)
			}
			if h != nil && (acked == nil || h.Verified.Held != acked.Verified.Held) && !nacked[h.Verified.Held] {
				resp, err := change(acked, h)
				if err != nil {
					return status.Errorf(codes.Internal, "compute change: %v", err)
				}
				seq++
				resp.Nonce = strconv.Itoa(seq)
				if err := stream.Send(resp); err != nil {
					return err
				}
				a.observeDelivery(h)
				inflight = &pending{nonce: resp.Nonce, h: h}
			}
		}
		select {
		case <-changed:
		case r := <-reqs:
			if inflight == nil || r.GetResponseNonce() != inflight.nonce {
				continue // a stale or unknown nonce answers nothing in flight
			}
			if r.GetErrorDetail() != "" {
				nacked[inflight.h.Verified.Held] = true
				a.recordNack(inflight.h.Verified.Header.GetVersion(), first.GetNodeId(), r.GetErrorDetail())
			} else {
				acked = inflight.h
			}
			inflight = nil
		case err := <-recvErr:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-m.s.closing:
			return unavailable(ctx, "the agent is shutting down")
		}
	}
}

// change is the response that brings a client from acked (nil: nothing) to h.
func change(acked, h *heldBundle) (*southboundv1.WatchResponse, error) {
	target, err := h.Decoded()
	if err != nil {
		return nil, err
	}
	base, bh := &bundlev1.Bundle{}, bundle.Digest{}
	full := acked == nil
	if !full {
		if base, err = acked.Decoded(); err != nil {
			return nil, err
		}
		bh = bundle.Digest(acked.Verified.Held)
	}
	d, err := bundle.DeltaBetween(base, bh, target, bundle.Digest(h.Verified.Held))
	if err != nil {
		return nil, err
	}
	return &southboundv1.WatchResponse{
		Epoch: h.Verified.Header.GetEpoch(), Version: h.Verified.Header.GetVersion(), Full: full,
		Upserts: d.GetUpserts(), Removals: d.GetRemovals(),
		RequiredCapabilities: h.Verified.Header.GetRequiredCapabilities(), BundleHash: slices.Clone(h.Verified.Held[:]),
	}, nil
}
