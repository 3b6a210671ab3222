package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/node"
	"meshkit.dev/meshkit/p2p"
	southboundv1 "meshkit.dev/meshkit/proto/meshkit/southbound/v1"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
	"meshkit.dev/meshkit/trust"
)

// payloadCaps is d.payload with required capabilities (a capability variant).
func (d *domain) payloadCaps(t testing.TB, version uint64, routes int, caps ...string) []byte {
	t.Helper()
	b, err := bundle.DecodeBundle(d.payload(t, version, routes))
	if err != nil {
		t.Fatal(err)
	}
	b.Header.RequiredCapabilities = caps
	p, err := bundle.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// southbound is an agent without peers, fed bundles directly, serving its southbound on
// loopback TCP.
type southbound struct {
	d     *domain
	agent *node.Agent
	sb    *node.Southbound
	conn  *grpc.ClientConn
}

func newSouthbound(t *testing.T, cfg ...node.SouthboundConfig) *southbound {
	t.Helper()
	d := newDomain(t, "prod")
	mn := mocknet.New()
	t.Cleanup(func() { _ = mn.Close() })
	h, err := mn.GenPeer()
	if err != nil {
		t.Fatal(err)
	}
	a, err := node.New(context.Background(), node.Config{Root: d.root, DataDir: t.TempDir(), Host: h, Clock: d.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	sb := a.NewSouthbound(append(cfg, node.SouthboundConfig{})[0])
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sb.Serve(ln) }()
	t.Cleanup(func() {
		sb.Close()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &southbound{d: d, agent: a, sb: sb, conn: conn}
}

func (s *southbound) give(t *testing.T, payload []byte) {
	t.Helper()
	if v := s.agent.Replica().Validate(context.Background(), p2p.Message{Data: s.d.seal(t, trust.PayloadBundle, payload, s.d.seed)}); v != p2p.Accept {
		t.Fatalf("bundle refused: %s", v)
	}
}

func recvWithin(t *testing.T, recv func() (*controlpb.ControlWatchResponse, error)) (*controlpb.ControlWatchResponse, error) {
	t.Helper()
	type res struct {
		r   *controlpb.ControlWatchResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := recv(); ch <- res{r, err} }()
	select {
	case x := <-ch:
		return x.r, x.err
	case <-time.After(10 * time.Second):
		t.Fatal("no watch response in 10 s")
		return nil, nil
	}
}

// TestControlWatchAsOmniRelayDoes drives the agent with the client generated from the
// omnirelay.control protos, the way OmniRelay's agent library does.
func TestControlWatchAsOmniRelayDoes(t *testing.T) {
	s := newSouthbound(t)
	core1 := s.d.payloadCaps(t, 1, 3, "core/v1")
	wasm1 := s.d.payloadCaps(t, 1, 4, "core/v1", "feature:ext-wasm")
	s.give(t, core1)
	s.give(t, wasm1)
	c := controlpb.NewControlPlaneWatchClient(s.conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	caps := &controlpb.CapabilitySet{Items: []string{"core/v1", "dsl/v1"}}

	// No resume token: the current state, as a full snapshot of the core variant.
	w, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "prod:web-1", Capabilities: caps})
	if err != nil {
		t.Fatal(err)
	}
	r, err := recvWithin(t, w.Recv)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetFullSnapshot() || r.GetVersion() != "1" || r.GetEpoch() != 1 || string(r.GetPayload()) != string(core1) ||
		r.GetResumeToken().GetVersion() != "1" || r.GetBackoff().GetMillis() != 1000 || !slices.Equal(r.GetRequiredCapabilities(), []string{"core/v1"}) {
		t.Fatalf("first response = version %q full %v token %v backoff %v caps %v payload ok %v", r.GetVersion(), r.GetFullSnapshot(),
			r.GetResumeToken(), r.GetBackoff(), r.GetRequiredCapabilities(), string(r.GetPayload()) == string(core1))
	}
	token := r.GetResumeToken()

	// A new bundle is pushed on the open stream.
	core2 := s.d.payloadCaps(t, 2, 5, "core/v1")
	s.give(t, core2)
	if r, err = recvWithin(t, w.Recv); err != nil || r.GetVersion() != "2" || !r.GetFullSnapshot() || string(r.GetPayload()) != string(core2) {
		t.Fatalf("push: version %q full %v err %v", r.GetVersion(), r.GetFullSnapshot(), err)
	}
	current := r.GetResumeToken()

	for _, tc := range []struct {
		name  string
		token *controlpb.WatchResumeToken
		full  bool
	}{
		{"current token", current, false},
		{"stale token", token, true},
		{"other epoch", &controlpb.WatchResumeToken{Version: "2", Epoch: 7}, true},
		{"malformed token", &controlpb.WatchResumeToken{Version: "two", Epoch: 1}, true},
	} {
		w, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "web-2", Capabilities: caps, ResumeToken: tc.token})
		if err != nil {
			t.Fatal(err)
		}
		r, err := recvWithin(t, w.Recv)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if r.GetFullSnapshot() != tc.full || r.GetVersion() != "2" || (len(r.GetPayload()) > 0) != tc.full {
			t.Fatalf("%s: full_snapshot %v (payload %d bytes) version %q; want full %v", tc.name, r.GetFullSnapshot(), len(r.GetPayload()), r.GetVersion(), tc.full)
		}
	}

	// The richer variant for a client that can run Wasm.
	ww, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "web-3", Capabilities: &controlpb.CapabilitySet{Items: []string{"core/v1", "feature:ext-wasm"}}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := recvWithin(t, ww.Recv); err != nil || string(r.GetPayload()) != string(wasm1) {
		t.Fatalf("wasm client got version %q (%v), want the wasm variant", r.GetVersion(), err)
	}

	// No variant fits: one error response, then a non-OK end.
	uw, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "old-1", Capabilities: &controlpb.CapabilitySet{Items: []string{"dsl/v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	r, err = recvWithin(t, uw.Recv)
	if err != nil || r.GetError().GetCode() != "control.unsupported_capability" || !slices.Equal(r.GetRequiredCapabilities(), []string{"core/v1"}) ||
		r.GetBackoff().GetMillis() != 5000 || len(r.GetPayload()) != 0 {
		t.Fatalf("unsupported: %v (err %v)", r, err)
	}
	if _, err := recvWithin(t, uw.Recv); status.Code(err) == codes.OK || errors.Is(err, io.EOF) {
		t.Fatalf("unsupported stream ended with %v; it must not end OK", err)
	}

	// Snapshot.
	snap, err := c.Snapshot(ctx, &controlpb.ControlSnapshotRequest{NodeId: "web-4", Capabilities: caps})
	if err != nil || snap.GetVersion() != "2" || string(snap.GetPayload()) != string(core2) {
		t.Fatalf("snapshot: %v %v", snap.GetVersion(), err)
	}
	var trailer metadata.MD
	_, err = c.Snapshot(ctx, &controlpb.ControlSnapshotRequest{Capabilities: &controlpb.CapabilitySet{Items: []string{"dsl/v1"}}}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.FailedPrecondition || !slices.Equal(trailer.Get("error-code"), []string{"control.unsupported_capability"}) {
		t.Fatalf("unsupported snapshot: %v, trailer %v", err, trailer)
	}

	// Garbage is refused with a clear error.
	gw, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: string(make([]byte, 1000)), Capabilities: caps})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recvWithin(t, gw.Recv); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("1000-byte node_id: %v", err)
	}

	// Shutdown: the open stream gets a backoff hint and ends UNAVAILABLE, never OK.
	s.sb.Close()
	for {
		r, err := recvWithin(t, w.Recv)
		if err != nil {
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("on shutdown the watch ended with %v, want UNAVAILABLE", err)
			}
			break
		}
		if r.GetBackoff().GetMillis() <= 0 {
			t.Fatalf("shutdown response without backoff: %v", r)
		}
	}
}

// meshReader reads a mesh watch on one goroutine, so a timed-out wait loses nothing.
type meshReader struct {
	ch  chan *southboundv1.WatchResponse
	err chan error
}

func readMesh(w grpc.BidiStreamingClient[southboundv1.WatchRequest, southboundv1.WatchResponse]) *meshReader {
	m := &meshReader{ch: make(chan *southboundv1.WatchResponse, 16), err: make(chan error, 1)}
	go func() {
		for {
			r, err := w.Recv()
			if err != nil {
				m.err <- err
				return
			}
			m.ch <- r
		}
	}()
	return m
}

func (m *meshReader) next(within time.Duration) (*southboundv1.WatchResponse, error) {
	select {
	case r := <-m.ch:
		return r, nil
	case err := <-m.err:
		return nil, err
	case <-time.After(within):
		return nil, context.DeadlineExceeded
	}
}

// TestMeshWatchAckNack: per-resource changes relative to the last ACK; a NACKed version is
// counted, reported in the agent's status, and not sent again.
func TestMeshWatchAckNack(t *testing.T) {
	s := newSouthbound(t)
	p1 := s.d.payload(t, 1, 3)
	s.give(t, p1)
	c := southboundv1.NewSouthboundServiceClient(s.conn)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(&southboundv1.WatchRequest{NodeId: "web-1"}); err != nil {
		t.Fatal(err)
	}
	rd := readMesh(w)
	r, err := rd.next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetFull() || r.GetVersion() != 1 || len(r.GetUpserts()) != 4 || r.GetNonce() == "" { // 1 cluster + 3 routes
		t.Fatalf("first: full %v version %d upserts %d nonce %q", r.GetFull(), r.GetVersion(), len(r.GetUpserts()), r.GetNonce())
	}
	if err := w.Send(&southboundv1.WatchRequest{ResponseNonce: r.GetNonce()}); err != nil { // ACK v1
		t.Fatal(err)
	}

	s.give(t, s.d.payload(t, 2, 5)) // two routes more
	r, err = rd.next(10 * time.Second)
	if err != nil || r.GetFull() || r.GetVersion() != 2 || len(r.GetUpserts()) != 2 || len(r.GetRemovals()) != 0 {
		t.Fatalf("v2: %v (err %v); want 2 upserts relative to v1", r, err)
	}
	if err := w.Send(&southboundv1.WatchRequest{ResponseNonce: r.GetNonce(), ErrorDetail: "route r00004: unknown filter"}); err != nil { // NACK v2
		t.Fatal(err)
	}
	if r, err := rd.next(500 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after a NACK the agent sent %v (err %v); it must not resend v2", r, err)
	}
	waitFor(t, "the NACK in status", func() bool {
		n := s.agent.Status().Nacks
		return len(n) == 1 && n[0].Version == 2 && n[0].Count == 1 && n[0].LastError == "route r00004: unknown filter"
	})

	s.give(t, s.d.payload(t, 3, 2)) // one route fewer than v1
	r, err = rd.next(10 * time.Second)
	if err != nil || r.GetVersion() != 3 || r.GetFull() || len(r.GetUpserts()) != 0 || len(r.GetRemovals()) != 1 || r.GetRemovals()[0].GetName() != "r00002" {
		t.Fatalf("v3: %v (err %v); want one removal relative to the ACKed v1", r, err)
	}
}

// TestWatchConnectDisconnectLoop: thousands of clients come and go; no stream or goroutine
// is left behind (goleak checks the package at the end as well).
func TestWatchConnectDisconnectLoop(t *testing.T) {
	s := newSouthbound(t)
	s.give(t, s.d.payload(t, 1, 3))
	c := controlpb.NewControlPlaneWatchClient(s.conn)
	base := runtime.NumGoroutine()
	for i := range 2000 {
		ctx, cancel := context.WithCancel(context.Background())
		w, err := c.Watch(ctx, &controlpb.ControlWatchRequest{NodeId: fmt.Sprint("n", i), Capabilities: &controlpb.CapabilitySet{Items: []string{"core/v1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // half read their snapshot, half leave at once
			if _, err := w.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
	}
	waitFor(t, "every stream closed", func() bool { return s.sb.Streams() == 0 })
	waitFor(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base+10 })
}

// TestNacksAreReportedToTheSeed: a data-plane NACK reaches the seeds the agent is
// connected to, in the agent's report.
func TestNacksAreReportedToTheSeed(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMesh(t, d, 1)
	m.seed.publish(t, m.seed.offer(t, d, 1, d.payload(t, 1, 3)))
	waitVersion(t, 1, m.agents...)
	sb := m.agents[0].NewSouthbound(node.SouthboundConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sb.Serve(ln) }()
	defer sb.Close()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := southboundv1.NewSouthboundServiceClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(&southboundv1.WatchRequest{NodeId: "web-1"}); err != nil {
		t.Fatal(err)
	}
	r, err := readMesh(w).next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Send(&southboundv1.WatchRequest{ResponseNonce: r.GetNonce(), ErrorDetail: "bad"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case rep := <-m.seed.reports:
			if len(rep.GetNacks()) == 1 && rep.GetNacks()[0].GetVersion() == 1 && rep.GetNacks()[0].GetCount() == 1 && rep.GetServingVersion() == 1 {
				return
			}
		case <-deadline:
			t.Fatal("the seed got no report of the NACK")
		}
	}
}

// TestSilentStreamsCountAgainstMaxStreams: MeshKit watch streams that open and never send
// their first request hold slots, so a client cannot open unbounded streams by staying
// silent; at the limit the next stream, of either API, is refused UNAVAILABLE.
func TestSilentStreamsCountAgainstMaxStreams(t *testing.T) {
	s := newSouthbound(t, node.SouthboundConfig{MaxStreams: 2})
	s.give(t, s.d.payload(t, 1, 3))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mesh := southboundv1.NewSouthboundServiceClient(s.conn)
	for range 2 {
		if _, err := mesh.Watch(ctx); err != nil { // opened, nothing sent
			t.Fatal(err)
		}
	}
	waitFor(t, "two open streams", func() bool { return s.sb.Streams() == 2 })
	w, err := controlpb.NewControlPlaneWatchClient(s.conn).Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "web-1", Capabilities: &controlpb.CapabilitySet{Items: []string{"core/v1"}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = recvWithin(t, w.Recv)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a third stream: %v, want UNAVAILABLE", err)
	}
}
