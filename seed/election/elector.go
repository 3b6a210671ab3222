package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	_ "a.meshkit.dev/protoconflict" // before etcd's and libp2p's protos: see the package

	"github.com/jonboulle/clockwork"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultTTL is the leader's lease. A killed leader is replaced within it (etcd ends the
// lease; nothing else can tell a dead leader from a slow one), so it bounds failover:
// 4 s keeps a kill's failover under 5 s. OmniRelay's own default is 8 s (docs/ha.md).
const DefaultTTL = 4 * time.Second

// Config configures an Elector.
type Config struct {
	Client *clientv3.Client
	// Prefix is the election's key prefix (etcdstore.ElectionPrefix(domain)).
	Prefix string
	// Scope names the election in leadership events (the domain).
	Scope string
	// Self is this seed's value; its ID is required.
	Self Info
	// TTL is the session lease: a leader that stops renewing it (killed, paused, cut off
	// from etcd) loses its key this long after its last renewal. Whole seconds, ≥ 2 s.
	TTL time.Duration
	// RenewEvery is how often leadership is re-read (RENEWED events, expiry checks).
	RenewEvery time.Duration
	Clock      clockwork.Clock
	Logger     *slog.Logger
}

// Term is one won election: this seed leads with epoch Rev until Done is closed.
type Term struct {
	Key string // the leader key: commits are fenced on it
	Rev int64  // its creation revision: the epoch of every bundle published in the term

	done   chan struct{}
	resign chan chan error
}

// Done is closed when the term is over: the session ended, the key went, or Resign.
func (t *Term) Done() <-chan struct{} { return t.done }

// Resign gives leadership up (proclaiming it first, so watchers see STEPPED_DOWN).
func (t *Term) Resign(ctx context.Context) error {
	ack := make(chan error, 1)
	select {
	case t.resign <- ack:
	case <-t.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-ack:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Elector campaigns for leadership of one scope and tracks who leads.
type Elector struct {
	cfg   Config
	log   *slog.Logger
	terms chan *Term

	mu      sync.Mutex // guards tracker, subs and ownKey
	tracker *Tracker
	subs    map[chan Event]struct{}
	leases  map[string]clientv3.LeaseID // candidate key → its lease
	ownKey  string
	keyGone chan struct{} // closed when ownKey is deleted

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates cfg and starts campaigning and watching; Close stops both.
func New(cfg Config) (*Elector, error) {
	if cfg.Client == nil || cfg.Prefix == "" || cfg.Self.ID == "" {
		return nil, errors.New("election: Client, Prefix and Self.ID are required")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 2*time.Second || cfg.TTL%time.Second != 0 {
		return nil, fmt.Errorf("election: TTL %s; whole seconds, at least 2 s", cfg.TTL)
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = cfg.TTL / 3 // as often as the session renews the lease
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Elector{cfg: cfg, log: cfg.Logger, terms: make(chan *Term), tracker: NewTracker(cfg.Scope, cfg.TTL),
		subs: map[chan Event]struct{}{}, leases: map[string]clientv3.LeaseID{}}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.wg.Add(3)
	go func() { defer e.wg.Done(); e.campaignLoop(ctx) }()
	go func() { defer e.wg.Done(); e.watchLoop(ctx) }()
	go func() { defer e.wg.Done(); e.renewLoop(ctx) }()
	return e, nil
}

// Terms delivers each term this seed wins. The receiver owns it until Done.
func (e *Elector) Terms() <-chan *Term { return e.terms }

// Close stops campaigning (a held term ends, its key deleted) and joins the goroutines.
func (e *Elector) Close() error {
	e.cancel()
	e.wg.Wait()
	e.mu.Lock()
	for ch := range e.subs {
		close(ch)
		delete(e.subs, ch)
	}
	e.mu.Unlock()
	return nil
}

// Leader returns the current leadership and the followers, as this seed sees them.
func (e *Elector) Leader() (tok Token, ok bool, followers []Info) {
	e.mu.Lock()
	defer e.mu.Unlock()
	tok, ok = e.tracker.Leader()
	return tok, ok, e.tracker.Followers()
}

// Subscribe returns the snapshot events and a channel of the live ones; cancel ends it.
// A subscriber that falls 64 events behind is dropped (its channel closed).
func (e *Elector) Subscribe() (snapshot []Event, events <-chan Event, cancel func()) {
	ch := make(chan Event, 64)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subs[ch] = struct{}{}
	return e.tracker.Snapshot(e.cfg.Clock.Now()), ch, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		if _, ok := e.subs[ch]; ok {
			delete(e.subs, ch)
			close(ch)
		}
	}
}

// emit hands events to the subscribers; mu is held.
func (e *Elector) emit(evs []Event) {
	for _, ev := range evs {
		e.log.Info("leadership", "event", ev.Kind.String(), "scope", ev.Token.Scope, "leader", ev.Token.LeaderID, "term", ev.Token.Term, "reason", ev.Reason)
		for ch := range e.subs {
			select {
			case ch <- ev:
			default:
				delete(e.subs, ch)
				close(ch)
			}
		}
	}
}

func (e *Elector) sleep(ctx context.Context, d time.Duration) {
	t := e.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.Chan():
	}
}

// campaignLoop campaigns, hands each won term out, and campaigns again when it ends.
func (e *Elector) campaignLoop(ctx context.Context) {
	defer close(e.terms)
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		if err := e.campaignOnce(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("election: campaign failed; retrying", "err", err, "in", backoff)
			e.sleep(ctx, backoff)
			backoff = min(backoff*2, e.cfg.TTL)
			continue
		}
		backoff = 250 * time.Millisecond
	}
}

func (e *Elector) campaignOnce(ctx context.Context) error {
	sess, err := concurrency.NewSession(e.cfg.Client, concurrency.WithTTL(int(e.cfg.TTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	defer sess.Close() // revokes the lease: the key goes at once
	sessCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-sess.Done():
			stop()
		case <-sessCtx.Done():
		}
	}()
	el := concurrency.NewElection(sess, e.cfg.Prefix+"/")
	self := e.cfg.Self
	self.Since = e.cfg.Clock.Now().UTC()
	val, _ := json.Marshal(self)
	if err := el.Campaign(sessCtx, string(val)); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	// Campaign can return after the session's lease expired while it waited; the key must
	// still be there, at the revision it was created with.
	resp, err := e.cfg.Client.Get(sessCtx, el.Key())
	if err != nil {
		return fmt.Errorf("check the leader key: %w", err)
	}
	if len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != el.Rev() {
		return errors.New("the leader key went while campaigning (session expired)")
	}
	term := &Term{Key: el.Key(), Rev: el.Rev(), done: make(chan struct{}), resign: make(chan chan error)}
	gone := make(chan struct{})
	e.mu.Lock()
	e.ownKey, e.keyGone = term.Key, gone
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.ownKey, e.keyGone = "", nil
		e.mu.Unlock()
		close(term.done)
	}()
	e.log.Info("election: this seed leads", "scope", e.cfg.Scope, "term", term.Rev)
	select {
	case e.terms <- term:
	case <-sessCtx.Done():
		return nil
	}
	var why string
	select {
	case <-sess.Done():
		why = "the session's lease ended (etcd unreachable for longer than the TTL, or the process was paused)"
	case <-gone:
		why = "the leader key was deleted"
	case <-ctx.Done():
		e.stepDown(el, self)
		return nil
	case ack := <-term.resign:
		ack <- e.stepDown(el, self)
		return nil
	}
	e.mu.Lock()
	e.emit(e.tracker.Lost(term.Key, e.cfg.Clock.Now(), why))
	e.mu.Unlock()
	e.log.Warn("election: leadership lost", "term", term.Rev, "why", why)
	return nil
}

// stepDown proclaims the resignation, then deletes the key.
func (e *Elector) stepDown(el *concurrency.Election, self Info) error {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.TTL)
	defer cancel()
	self.Resigning = true
	val, _ := json.Marshal(self)
	if err := el.Proclaim(ctx, string(val)); err != nil {
		return fmt.Errorf("election: proclaim the resignation: %w", err)
	}
	return el.Resign(ctx)
}

// watchLoop keeps the tracker in step with the election prefix.
func (e *Elector) watchLoop(ctx context.Context) {
	for ctx.Err() == nil {
		if err := e.watchOnce(ctx); err != nil && ctx.Err() == nil {
			e.log.Warn("election: watch failed; re-reading", "err", err)
			e.sleep(ctx, 500*time.Millisecond)
		}
	}
}

func (e *Elector) candidate(key string, rev int64, lease int64, value []byte) (Candidate, bool) {
	in, err := DecodeInfo(value)
	if err != nil {
		e.log.Warn("election: ignoring a candidate", "key", key, "err", err)
		return Candidate{}, false
	}
	e.leases[key] = clientv3.LeaseID(lease)
	return Candidate{Key: key, Rev: rev, Info: in}, true
}

func (e *Elector) watchOnce(ctx context.Context) error {
	pfx := e.cfg.Prefix + "/"
	resp, err := e.cfg.Client.Get(ctx, pfx, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	now := e.cfg.Clock.Now()
	e.mu.Lock()
	present := map[string]bool{}
	for _, kv := range resp.Kvs {
		present[string(kv.Key)] = true
		if c, ok := e.candidate(string(kv.Key), kv.CreateRevision, kv.Lease, kv.Value); ok {
			e.emit(e.tracker.Put(c, now))
		}
	}
	for key := range e.tracker.cands {
		if !present[key] {
			e.deleted(key, now)
		}
	}
	e.mu.Unlock()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range e.cfg.Client.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		now := e.cfg.Clock.Now()
		e.mu.Lock()
		for _, ev := range wr.Events {
			key := string(ev.Kv.Key)
			if ev.Type == clientv3.EventTypeDelete {
				e.deleted(key, now)
				continue
			}
			if c, ok := e.candidate(key, ev.Kv.CreateRevision, ev.Kv.Lease, ev.Kv.Value); ok {
				e.emit(e.tracker.Put(c, now))
			}
		}
		e.mu.Unlock()
	}
	return ctx.Err()
}

// deleted records a key's deletion; mu is held.
func (e *Elector) deleted(key string, now time.Time) {
	delete(e.leases, key)
	if key == e.ownKey && e.keyGone != nil {
		close(e.keyGone)
		e.keyGone = nil
	}
	e.emit(e.tracker.Delete(key, now))
}

// renewLoop reads the leader's lease every RenewEvery: RENEWED while it is kept alive,
// EXPIRED once its token runs out.
func (e *Elector) renewLoop(ctx context.Context) {
	tick := e.cfg.Clock.NewTicker(e.cfg.RenewEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.Chan():
		}
		e.mu.Lock()
		tok, ok := e.tracker.Leader()
		var key string
		var lease clientv3.LeaseID
		if ok {
			for k, c := range e.tracker.cands {
				if c.Rev == tok.Term {
					key, lease = k, e.leases[k]
				}
			}
		}
		e.mu.Unlock()
		if lease != 0 {
			rctx, cancel := context.WithTimeout(ctx, e.cfg.RenewEvery)
			ttl, err := e.cfg.Client.TimeToLive(rctx, lease)
			cancel()
			if err == nil && ttl.TTL > 0 {
				now := e.cfg.Clock.Now()
				e.mu.Lock()
				e.emit(e.tracker.Renewed(key, now.Add(time.Duration(ttl.TTL)*time.Second), now))
				e.mu.Unlock()
			}
		}
		e.mu.Lock()
		e.emit(e.tracker.Tick(e.cfg.Clock.Now()))
		e.mu.Unlock()
	}
}
