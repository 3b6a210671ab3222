package seed_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
)

// TestRefusalsAreDomainErrors: an embedding process applies without a principal and gets
// refusals it can test with errors.Is; the admin API renders the same refusal as the gRPC
// code its clients expect.
func TestRefusalsAreDomainErrors(t *testing.T) {
	ts := open(t, "")
	_, err := ts.Apply(t.Context(), "embedder", nil)
	if !errors.Is(err, seed.ErrInvalid) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty apply: %v (code %v), want ErrInvalid / InvalidArgument", err, status.Code(err))
	}
	bad := resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Route\nmetadata: {name: r, namespace: shop}\nspec: {cluster: missing, match: {hosts: [r.example]}}\n")
	if _, err := ts.Apply(t.Context(), "embedder", bad); !errors.Is(err, seed.ErrInvalid) {
		t.Fatalf("route to a missing cluster: %v, want ErrInvalid", err)
	}
	good := resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: api, namespace: shop}\nspec: {endpoints: [{address: 10.0.0.1, port: 80}]}\n")
	resp, err := ts.Apply(t.Context(), "embedder", good)
	if err != nil || len(resp.GetChanges()) != 1 {
		t.Fatalf("apply as the embedder: %v, %v", resp, err)
	}
	_, err = ts.api.Delete(adminCtx(), &adminv1.DeleteRequest{Kind: "Cluster", Namespace: "shop", Name: "nope"})
	if !errors.Is(err, seed.ErrNotFound) || status.Code(err) != codes.NotFound {
		t.Fatalf("delete of nothing: %v (code %v), want ErrNotFound / NotFound", err, status.Code(err))
	}
}

// TestPublishWaitsOnTheInjectedClock: the publish loop's debounce runs on the seed's
// clock, so a test advances it instead of sleeping: with an hour's debounce nothing is
// published until the fake clock has moved an hour.
func TestPublishWaitsOnTheInjectedClock(t *testing.T) {
	fc := clockwork.NewFakeClockAt(time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	ts := open(t, "", func(c *seed.Config) { c.Clock, c.Debounce, c.MaxDelay = fc, time.Hour, 2*time.Hour })
	ts.apply(t, resources(t, "apiVersion: meshkit.dev/v1alpha1\nkind: Cluster\nmetadata: {name: api, namespace: shop}\nspec: {endpoints: [{address: 10.0.0.1, port: 80}]}\n"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := fc.BlockUntilContext(ctx, 1); err != nil { // the loop waits on a timer of fc
		t.Fatal(err)
	}
	if n := len(ts.MemPublisher().History()); n != 0 {
		t.Fatalf("%d publications before the debounce ended", n)
	}
	// Whether the loop waits on its debounce timer yet or is about to, an hour of fc ends
	// it: the publication follows within two advances (MaxDelay is two hours).
	for range 3 {
		fc.Advance(time.Hour)
		wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		p, err := ts.MemPublisher().WaitVersion(wctx, 1)
		cancel()
		if err == nil {
			if p.Info.GetVersion() != 1 {
				t.Fatalf("published v%d", p.Info.GetVersion())
			}
			return
		}
	}
	t.Fatal("nothing published after three hours of the seed's clock")
}
