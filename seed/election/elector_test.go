package election_test

import (
	"context"
	"net"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"meshkit.dev/meshkit/internal/etcdtest"
	leadershipv1 "meshkit.dev/meshkit/proto/omnirelay/mesh/control/v1"
	"meshkit.dev/meshkit/seed/election"
)

type candidate struct {
	id  string
	cli *clientv3.Client
	e   *election.Elector
}

func start(t *testing.T, srv *etcdtest.Server, id string) *candidate {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	e, err := election.New(election.Config{Client: cli, Prefix: "/meshkit/prod/leader", Scope: "prod", Self: election.Info{ID: id, Admin: id + ":17400"},
		TTL: 2 * time.Second, RenewEvery: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := &candidate{id: id, cli: cli, e: e}
	t.Cleanup(func() { e.Close(); cli.Close() })
	return c
}

// nextTerm waits for whichever candidate wins next.
func nextTerm(t *testing.T, cands ...*candidate) (*candidate, *election.Term) {
	t.Helper()
	cases := make(chan struct {
		c  *candidate
		tm *election.Term
	}, len(cands))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, c := range cands {
		go func() {
			select {
			case tm := <-c.e.Terms():
				cases <- struct {
					c  *candidate
					tm *election.Term
				}{c, tm}
			case <-ctx.Done():
			}
		}()
	}
	select {
	case w := <-cases:
		return w.c, w.tm
	case <-time.After(20 * time.Second):
		t.Fatal("no candidate was elected in 20 s")
	}
	return nil, nil
}

func subscribe(t *testing.T, e *election.Elector) <-chan *leadershipv1.LeadershipEvent {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	(&election.Service{E: e}).Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := leadershipv1.NewLeadershipControlServiceClient(conn).Subscribe(ctx, &leadershipv1.LeadershipSubscribeRequest{Scope: "other"}); err != nil {
		t.Fatal(err) // the error arrives with the first Recv
	}
	st, err := leadershipv1.NewLeadershipControlServiceClient(conn).Subscribe(ctx, &leadershipv1.LeadershipSubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *leadershipv1.LeadershipEvent, 256)
	go func() {
		defer close(out)
		for {
			ev, err := st.Recv()
			if err != nil {
				return
			}
			out <- ev
		}
	}()
	return out
}

// waitSees waits until every candidate's watch has seen the term.
func waitSees(t *testing.T, term int64, cands ...*candidate) {
	t.Helper()
	for _, c := range cands {
		for i := 0; ; i++ {
			if tok, ok, _ := c.e.Leader(); ok && tok.Term == term {
				break
			}
			if i > 2000 {
				t.Fatalf("%s never saw term %d", c.id, term)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// expect reads events until one of kind arrives (skipping RENEWED), failing on any other.
func expect(t *testing.T, events <-chan *leadershipv1.LeadershipEvent, kind leadershipv1.LeadershipEventKind) *leadershipv1.LeadershipEvent {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("stream ended waiting for %s", kind)
			}
			if ev.GetKind() == kind {
				return ev
			}
			if ev.GetKind() != leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_RENEWED {
				t.Fatalf("got %s (%s, term %d), want %s", ev.GetKind(), ev.GetLeaderId(), ev.GetToken().GetTerm(), kind)
			}
		case <-deadline:
			t.Fatalf("no %s in 20 s", kind)
		}
	}
}

// TestOneLeaderStepsDownAndAKilledOneExpires runs three electors on a real etcd: one leads,
// a resignation hands over with STEPPED_DOWN, and a leader whose process stops renewing
// (its client closed) is replaced after its lease with EXPIRED, each new term higher.
func TestOneLeaderStepsDownAndAKilledOneExpires(t *testing.T) {
	srv := etcdtest.Start(t, t.TempDir(), etcdtest.Options{})
	a, b, c := start(t, srv, "a"), start(t, srv, "b"), start(t, srv, "c")
	first, term1 := nextTerm(t, a, b, c)
	watcher := a
	if first == a {
		watcher = b
	}
	waitSees(t, term1.Rev, a, b, c)
	events := subscribe(t, watcher.e)
	snap := expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_SNAPSHOT)
	if snap.GetLeaderId() != first.id || snap.GetToken().GetTerm() != term1.Rev || snap.GetToken().GetFenceToken() != term1.Rev || snap.GetReason() != "snapshot" ||
		snap.GetToken().GetLabels()["admin"] != first.id+":17400" || snap.GetScope() != "prod" {
		t.Fatalf("snapshot %v; leader %s term %d", snap, first.id, term1.Rev)
	}
	for _, cand := range []*candidate{a, b, c} {
		for i := 0; ; i++ { // the others' keys may still be on their way
			tok, ok, followers := cand.e.Leader()
			if ok && tok.LeaderID == first.id && tok.Term == term1.Rev && len(followers) == 2 {
				break
			}
			if i > 2000 {
				t.Fatalf("%s sees leader %+v (%v), followers %v", cand.id, tok, ok, followers)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	if err := term1.Resign(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-term1.Done()
	down := expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_STEPPED_DOWN)
	if down.GetLeaderId() != first.id {
		t.Fatalf("stepped down: %v", down)
	}
	rest := []*candidate{}
	for _, cand := range []*candidate{a, b, c} {
		if cand != first {
			rest = append(rest, cand)
		}
	}
	second, term2 := nextTerm(t, append(rest, first)...)
	elected := expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_ELECTED)
	if term2.Rev <= term1.Rev || elected.GetLeaderId() != second.id || elected.GetToken().GetTerm() != term2.Rev {
		t.Fatalf("after the resignation: %s term %d elected (event %v); the old term was %d", second.id, term2.Rev, elected, term1.Rev)
	}

	if second == watcher { // the watcher must outlive the kill
		waitSees(t, term2.Rev, first)
		events = subscribe(t, first.e)
		expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_SNAPSHOT)
	}
	second.cli.Close() // the process is gone: no resignation, no more renewals
	expired := expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_EXPIRED)
	if expired.GetLeaderId() != second.id {
		t.Fatalf("expired: %v", expired)
	}
	var others []*candidate
	for _, cand := range []*candidate{a, b, c} {
		if cand != second {
			others = append(others, cand)
		}
	}
	third, term3 := nextTerm(t, others...)
	elected = expect(t, events, leadershipv1.LeadershipEventKind_LEADERSHIP_EVENT_KIND_ELECTED)
	if term3.Rev <= term2.Rev || elected.GetLeaderId() != third.id {
		t.Fatalf("after the kill: %s term %d (event %v); the old term was %d", third.id, term3.Rev, elected, term2.Rev)
	}
}
