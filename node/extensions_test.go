package node_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/tuning"
	"meshkit.dev/meshkit/internal/wasmfixture"
	"meshkit.dev/meshkit/node"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
)

type testExt struct {
	name   string
	module []byte // nil: nobody holds it
	size   uint64 // 0: the module's size
	policy bundlev1.FailurePolicy
}

// extPayload is a bundle with one route per extension, each bound to its extension.
func extPayload(t *testing.T, d *domain, version uint64, exts []testExt) []byte {
	t.Helper()
	b := &bundlev1.Bundle{Header: &bundlev1.BundleHeader{
		SchemaVersion: 1, Domain: d.name, Epoch: 1, Version: version,
		IssuedAt: timestamppb.New(t0.Add(-time.Minute)), ExpiresAt: timestamppb.New(t0.Add(24 * time.Hour)),
	}}
	b.Clusters = []*bundlev1.Cluster{{Metadata: &bundlev1.Metadata{Name: "api", Namespace: "shop"}, Spec: &bundlev1.ClusterSpec{Endpoints: []*bundlev1.Endpoint{{Address: "10.0.0.1", Port: 80}}}}}
	for _, e := range exts {
		mod := e.module
		if mod == nil {
			mod = []byte("module nobody holds: " + e.name)
		}
		size := e.size
		if size == 0 {
			size = uint64(len(mod))
		}
		b.Routes = append(b.Routes, &bundlev1.Route{
			Metadata: &bundlev1.Metadata{Name: e.name, Namespace: "shop"},
			Spec:     &bundlev1.RouteSpec{Cluster: "api", Match: &bundlev1.RouteMatch{Hosts: []string{e.name + ".shop.example"}}},
		})
		b.ExtensionBindings = append(b.ExtensionBindings, &bundlev1.ExtensionBinding{
			Metadata: &bundlev1.Metadata{Name: e.name, Namespace: "shop"},
			Spec:     &bundlev1.ExtensionBindingSpec{Extension: e.name, Routes: []string{e.name}, FailurePolicy: e.policy},
			Extension: &bundlev1.ExtensionSpec{
				Kind: bundlev1.ExtensionKind_EXTENSION_KIND_WASM, Artifact: content.Sum(mod).String(), Abi: "proxy-wasm/0.2.1",
				MediaType: "application/vnd.module.wasm.content.layer.v1+wasm", Size: size,
			},
		})
	}
	bundle.Canonicalize(b)
	p, err := bundle.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAgentsFetchAdmitAndServeExtensions: a bundle binds five extensions. Every agent
// fetches the artifacts (from one another, the seed only as a last resort), admits them
// with wazero, serves the valid one to its data plane, and honours each failure policy
// for the rest; the verdicts show in status and reach the seed.
func TestAgentsFetchAdmitAndServeExtensions(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 4, func(c *node.Config, tu *tuning.Replica) {
		c.Admission.StartTimeout = 200 * time.Millisecond
		c.ArtifactWait = 8 * time.Second
		c.ArtifactFetchTimeout = 6 * time.Second
	})
	valid, loop, forbidden := wasmfixture.Module(t, "valid"), wasmfixture.Module(t, "loop"), wasmfixture.Module(t, "forbidden")
	exts := []testExt{
		{name: "auth", module: valid, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED},
		{name: "spin", module: loop, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED},
		{name: "shell", module: forbidden, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_OPEN},
		{name: "ghost", module: nil, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_OPEN},
		// The manifest understates the size: no holder qualifies, so it is never fetched.
		{name: "liar", module: wasmfixture.Module(t, "noexport"), size: 10, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED},
	}
	// The seed holds every artifact that exists, and serves one transfer at a time.
	store, err := content.Open(t.TempDir(), content.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		if e.module != nil {
			if _, err := store.PutBytes(context.Background(), e.module); err != nil {
				t.Fatal(err)
			}
		}
	}
	seedContent := content.Serve(m.seed.node.Host(), d.name, store, content.ServerConfig{MaxConcurrent: 1})
	defer seedContent.Close()
	m.waitMesh()
	m.seed.publish(t, m.seed.offer(t, d, 1, extPayload(t, d, 1, exts)))
	waitVersion(t, 1, m.agents...)

	for i, a := range m.agents {
		cur, _ := a.Current()
		b, err := bundle.DecodeBundle(cur.Payload)
		if err != nil {
			t.Fatal(err)
		}
		bound := map[string]bool{}
		for _, eb := range b.GetExtensionBindings() {
			bound[eb.GetMetadata().GetName()] = true
		}
		refused := map[string]string{}
		for _, r := range b.GetRoutes() {
			if r.GetSpec().GetRefuse() {
				refused[r.GetMetadata().GetName()] = r.GetSpec().GetRefuseReason()
			}
		}
		if !bound["auth"] || len(bound) != 1 {
			t.Errorf("agent %d serves bindings %v; want only auth", i, bound)
		}
		if !strings.Contains(refused["spin"], "start_timeout") || !strings.Contains(refused["liar"], "unavailable") || len(refused) != 2 {
			t.Errorf("agent %d refuses %v; want spin (start_timeout) and liar (unavailable)", i, refused)
		}
	}
	// Status names each verdict and its reason.
	want := map[string]string{"auth": node.ExtAdmitted, "spin": node.ExtRejected, "shell": node.ExtRejected, "ghost": node.ExtUnavailable, "liar": node.ExtUnavailable}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := map[string]string{}
		for _, e := range m.agents[0].Status().Extensions {
			got[strings.TrimPrefix(e.Bindings[0], "shop/")] = e.State
			if e.State == node.ExtRejected && len(e.Reasons) == 0 {
				t.Fatalf("rejected without a reason: %+v", e)
			}
		}
		if equalMaps(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("extension states %v, want %v", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The data plane gets the admitted module's bytes, and nothing else.
	srv := httptest.NewServer(m.agents[0].Handler())
	defer srv.Close()
	if body := get(t, srv.URL+"/artifacts/"+content.Sum(valid).String(), 200); !bytes.Equal(body, valid) {
		t.Fatal("served module differs")
	}
	get(t, srv.URL+"/artifacts/"+content.Sum(loop).String(), 404)
	// Agents fetched from one another: the seed sent each existing artifact at most a
	// few times, not once per agent.
	total := len(valid) + len(loop) + len(forbidden)
	t.Logf("seed served %d bytes for %d bytes of artifacts, to 4 agents", seedContent.ServedBytes(), total)
	if served := seedContent.ServedBytes(); served > int64(3*total) {
		t.Errorf("seed served %d bytes for %d bytes of artifacts", served, total)
	}
	// The verdicts reach the seed.
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-m.seed.reports:
			if rejected(r) >= 2 {
				return
			}
		case <-timeout:
			t.Fatal("no report with the rejections reached the seed")
		}
	}
}

func rejected(r *syncv1.NodeReport) int {
	n := 0
	for _, e := range r.GetExtensions() {
		if e.GetState() == node.ExtRejected && len(e.GetReasons()) > 0 {
			n++
		}
	}
	return n
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func get(t *testing.T, url string, code int) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: %d %s, want %d", url, resp.StatusCode, body, code)
	}
	return body
}

// TestLateArtifactReachesOpenWatchStreams: when an artifact arrives after the wait, the
// bundle is offered again with the extension bound, and a watch stream that is already
// open receives it; before, a re-offered bundle kept the held bundle's hash, the stream saw
// nothing new, and the fail-closed route kept refusing traffic until the next version.
func TestLateArtifactReachesOpenWatchStreams(t *testing.T) {
	d := newDomain(t, "prod")
	m := newMeshWith(t, d, 2, func(c *node.Config, tu *tuning.Replica) {
		c.ArtifactWait = 300 * time.Millisecond
		c.ArtifactFetchTimeout = 30 * time.Second
	})
	store, err := content.Open(t.TempDir(), content.Options{})
	if err != nil {
		t.Fatal(err)
	}
	seedContent := content.Serve(m.seed.node.Host(), d.name, store, content.ServerConfig{MaxConcurrent: 1})
	defer seedContent.Close()
	m.waitMesh()

	sb := m.agents[0].NewSouthbound(node.SouthboundConfig{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sb.Serve(ln) }()
	defer func() { sb.Close(); <-served }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := controlpb.NewControlPlaneWatchClient(conn).Watch(ctx, &controlpb.ControlWatchRequest{NodeId: "prod:web-1",
		Capabilities: &controlpb.CapabilitySet{Items: []string{"core/v1", "feature:ext-wasm"}}})
	if err != nil {
		t.Fatal(err)
	}

	valid := wasmfixture.Module(t, "valid")
	m.seed.publish(t, m.seed.offer(t, d, 1, extPayload(t, d, 1, []testExt{{name: "auth", module: valid, policy: bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED}})))
	routeRefused := func(r *controlpb.ControlWatchResponse) bool {
		b, err := bundle.DecodeBundle(r.GetPayload())
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range b.GetRoutes() {
			if rt.GetMetadata().GetName() == "auth" {
				return rt.GetSpec().GetRefuse()
			}
		}
		t.Fatal("no route auth")
		return false
	}
	r, err := recvWithin(t, w.Recv)
	if err != nil {
		t.Fatal(err)
	}
	if !routeRefused(r) {
		t.Fatal("the first offer binds an artifact nobody holds")
	}
	if _, err := store.PutBytes(context.Background(), valid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for routeRefused(r) {
		if time.Now().After(deadline) {
			t.Fatal("the artifact arrived, but the open stream still refuses the route")
		}
		if r, err = recvWithin(t, w.Recv); err != nil {
			t.Fatal(err)
		}
	}
	if r.GetVersion() != "1" {
		t.Fatalf("the re-offer is version %q, want 1", r.GetVersion())
	}
}
