package content

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protodelim"

	contentv1 "meshkit.dev/meshkit/proto/meshkit/content/v1"
)

// Protocol is the content protocol of a domain: fetch a range of a blob by CID.
func Protocol(domain string) protocol.ID {
	return protocol.ID("/meshkit/" + domain + "/content/1")
}

const (
	maxRequestBytes = 1 << 10
	// MaxChunk bounds one range served or asked for.
	MaxChunk      = 1 << 20
	streamTimeout = 30 * time.Second
)

// SeedSlots is how many peers a seed serves artifacts to at once: few, so that agents
// fetch from one another, but more than one, so that no single peer can hold the seed.
const SeedSlots = 2

// ServerConfig bounds what a Server gives away.
type ServerConfig struct {
	// MaxConcurrent peers served at once; others are answered busy and look for another
	// provider. Seeds set it low: agents then fetch from one another. 0 is unlimited. A
	// peer keeps its slot while it makes progress: see leaseTable.
	MaxConcurrent int
	// Now tells the time of leases; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Allow, when set, decides which peers are served at all (p2p.Node.Admitted: peers
	// that showed a certificate of the domain); others get their stream reset.
	Allow func(peer.ID) bool
}

// Server answers the content protocol from a Store.
type Server struct {
	h     host.Host
	proto protocol.ID
	store *Store
	log   *slog.Logger
	now   func() time.Time
	allow func(peer.ID) bool
	// mu guards leases: the peers being served now. A peer keeps its slot for the whole
	// blob, so a limited server serves a few peers fully rather than every peer a little.
	mu     sync.Mutex
	leases leaseTable
	// Served counts data bytes sent.
	served atomic.Int64
}

// Serve registers the content protocol of domain on h, answering from store, until Close.
func Serve(h host.Host, domain string, store *Store, cfg ServerConfig) *Server {
	s := &Server{h: h, proto: Protocol(domain), store: store, log: cfg.Logger, now: cfg.Now, allow: cfg.Allow, leases: newLeaseTable(cfg.MaxConcurrent)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	h.SetStreamHandler(s.proto, s.handle)
	return s
}

// ServedBytes is how many blob bytes this server has sent.
func (s *Server) ServedBytes() int64 { return s.served.Load() }

// Close unregisters the protocol.
func (s *Server) Close() { s.h.RemoveStreamHandler(s.proto) }

func (s *Server) handle(st network.Stream) {
	if s.allow != nil && !s.allow(st.Conn().RemotePeer()) {
		_ = st.Reset()
		return
	}
	defer func() { _ = st.Close() }()
	_ = st.SetDeadline(time.Now().Add(streamTimeout))
	req := &contentv1.ContentRequest{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxRequestBytes}).UnmarshalFrom(bufio.NewReader(st), req); err != nil {
		s.log.Debug("content request refused", "peer", st.Conn().RemotePeer(), "err", err)
		_ = st.Reset()
		return
	}
	from := st.Conn().RemotePeer()
	resp := s.answer(from, req)
	if _, err := protodelim.MarshalTo(st, resp); err != nil {
		_ = st.Reset()
		return
	}
	if n := len(resp.GetData()); n > 0 {
		s.served.Add(int64(n))
		s.mu.Lock()
		s.leases.served(from, int64(n))
		s.mu.Unlock()
	}
}

// lease reports whether p may be served now.
func (s *Server) lease(p peer.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leases.acquire(p, s.now())
}

func (s *Server) answer(from peer.ID, req *contentv1.ContentRequest) *contentv1.ContentResponse {
	c, err := Parse(req.GetCid())
	if err != nil {
		return &contentv1.ContentResponse{Error: err.Error()}
	}
	size, ok := s.store.Has(c)
	if !ok {
		return &contentv1.ContentResponse{}
	}
	if req.GetLength() == 0 {
		return &contentv1.ContentResponse{Held: true, Size: uint64(size)}
	}
	if req.GetLength() > MaxChunk {
		return &contentv1.ContentResponse{Error: fmt.Sprintf("length %d over the %d-byte chunk limit", req.GetLength(), MaxChunk)}
	}
	if !s.lease(from) {
		return &contentv1.ContentResponse{Held: true, Size: uint64(size), Busy: true}
	}
	data, total, err := s.store.ReadRange(c, int64(req.GetOffset()), int64(req.GetLength()))
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDigestMismatch) {
			return &contentv1.ContentResponse{}
		}
		return &contentv1.ContentResponse{Error: err.Error()}
	}
	return &contentv1.ContentResponse{Held: true, Size: uint64(total), Data: data}
}

// FetchConfig tunes a Fetcher.
type FetchConfig struct {
	// Chunk is the range asked per request; default 256 KiB.
	Chunk int
	// Parallel is how many ranges are in flight at once, spread over providers; default 4.
	Parallel int
	// PeerTimeout bounds each request to one peer; default 5 s.
	PeerTimeout time.Duration
	// Retry is the wait between rounds of asking peers who holds a blob (jittered 50–150 %);
	// default 250 ms.
	Retry time.Duration
	// FallbackAfter is how long peers are asked alone before the fallback peers (seeds)
	// are asked too: each fetch draws its own wait between zero and twice this, so that
	// agents that got the same bundle at once do not all turn to the seed at once, and the
	// first to fetch becomes a provider for the rest. Default 2 s.
	FallbackAfter time.Duration
	Logger        *slog.Logger
}

func (c *FetchConfig) defaults() {
	if c.Chunk <= 0 {
		c.Chunk = 256 << 10
	}
	c.Chunk = min(c.Chunk, MaxChunk)
	if c.Parallel <= 0 {
		c.Parallel = 4
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = 5 * time.Second
	}
	if c.Retry <= 0 {
		c.Retry = 250 * time.Millisecond
	}
	if c.FallbackAfter <= 0 {
		c.FallbackAfter = 2 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Fetcher downloads blobs from peers into a Store.
type Fetcher struct {
	h     host.Host
	proto protocol.ID
	store *Store
	cfg   FetchConfig
	// fetched counts blob bytes received, by whether they came from a fallback peer.
	fromPeers, fromFallback atomic.Int64
}

// NewFetcher fetches with h over domain's content protocol into store.
func NewFetcher(h host.Host, domain string, store *Store, cfg FetchConfig) *Fetcher {
	cfg.defaults()
	return &Fetcher{h: h, proto: Protocol(domain), store: store, cfg: cfg}
}

// Received is the blob bytes fetched from peers and from fallback peers (seeds).
func (f *Fetcher) Received() (peers, fallback int64) {
	return f.fromPeers.Load(), f.fromFallback.Load()
}

// Sources are who may hold a blob.
type Sources struct {
	// Peers are asked first (connected agents).
	Peers func() []peer.ID
	// Fallback are asked only once Peers have not had it for FallbackAfter (seeds).
	Fallback []peer.ID
}

// Fetch makes the store hold c, which the signed manifest says is size bytes: the size
// caps every transfer, whatever a peer claims. It asks peers who holds c, downloads ranges
// from several of them in parallel, and verifies the whole against c before storing it.
// Fallback peers are asked only after FallbackAfter. It returns when c is held, or ctx
// ends.
func (f *Fetcher) Fetch(ctx context.Context, c cid.Cid, size int64, src Sources) error {
	if held, ok := f.store.Has(c); ok && held == size {
		return nil
	}
	if size <= 0 || size > f.store.MaxBlobBytes() {
		return fmt.Errorf("%w: %s is declared %d bytes; this store takes 1 to %d", ErrTooLarge, c, size, f.store.MaxBlobBytes())
	}
	fallbackAt := time.Now().Add(time.Duration(float64(f.cfg.FallbackAfter) * 2 * rand.Float64()))
	var lastErr error
	// Ranges received are kept across rounds: a round that fails part-way loses nothing.
	buf := make([]byte, size)
	have := make([]bool, (size+int64(f.cfg.Chunk)-1)/int64(f.cfg.Chunk))
	// liars served bytes that did not hash to c when they were the only provider.
	liars := map[peer.ID]bool{}
	isolate := false
	for {
		candidates := src.Peers()
		if !time.Now().Before(fallbackAt) {
			candidates = append(candidates, src.Fallback...)
		}
		candidates = slices.DeleteFunc(candidates, func(p peer.ID) bool { return liars[p] })
		providers := f.providers(ctx, c, size, candidates)
		if peers := slices.DeleteFunc(slices.Clone(providers), func(p peer.ID) bool { return slices.Contains(src.Fallback, p) }); len(peers) > 0 {
			providers = peers // the seed only when no peer has it
		}
		if isolate && len(providers) > 1 {
			// After a mismatch, fetch from one provider at a time to find the liar.
			providers = providers[:1]
		}
		if len(providers) > 0 {
			err := f.download(ctx, c, size, providers, src.Fallback, buf, have)
			if err == nil {
				return nil
			}
			lastErr = err
			f.cfg.Logger.Debug("fetch round failed", "cid", c, "providers", len(providers), "err", err)
			if errors.Is(err, ErrDigestMismatch) {
				if len(providers) == 1 {
					liars[providers[0]] = true
					f.cfg.Logger.Warn("peer served bytes that do not match the CID", "peer", providers[0], "cid", c)
				}
				isolate = true
			}
		}
		wait := time.Duration(float64(f.cfg.Retry) * (0.5 + rand.Float64()))
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("content: fetch %s: %w (last: %w)", c, ctx.Err(), lastErr)
			}
			return fmt.Errorf("content: fetch %s: no peer has it: %w", c, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// providers asks every candidate at once whether it holds c at the declared size.
func (f *Fetcher) providers(ctx context.Context, c cid.Cid, size int64, candidates []peer.ID) []peer.ID {
	var (
		mu  sync.Mutex
		out []peer.ID
		wg  sync.WaitGroup
	)
	seen := map[peer.ID]bool{f.h.ID(): true}
	for _, p := range candidates {
		if seen[p] {
			continue
		}
		seen[p] = true
		wg.Go(func() {
			resp, err := f.ask(ctx, p, &contentv1.ContentRequest{Cid: c.String()}, 0)
			if err != nil || !resp.GetHeld() || int64(resp.GetSize()) != size {
				return
			}
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// download fetches every range of c from providers, Parallel at a time, moving a range to
// another provider when one fails, is busy or answers the wrong length.
func (f *Fetcher) download(ctx context.Context, c cid.Cid, size int64, providers, fallback []peer.ID, buf []byte, have []bool) error {
	chunk := int64(f.cfg.Chunk)
	n := len(have)
	next := make(chan int, n)
	for i := range n {
		if !have[i] {
			next <- i
		}
	}
	close(next)
	isFallback := map[peer.ID]bool{}
	for _, p := range fallback {
		isFallback[p] = true
	}
	var (
		mu   sync.Mutex
		bad  = map[peer.ID]bool{}
		errs []error
		wg   sync.WaitGroup
		rr   atomic.Int64
	)
	pick := func() (peer.ID, bool) {
		mu.Lock()
		defer mu.Unlock()
		for range providers {
			p := providers[int(rr.Add(1))%len(providers)]
			if !bad[p] {
				return p, true
			}
		}
		return "", false
	}
	for range min(f.cfg.Parallel, n) {
		wg.Go(func() {
			for i := range next {
				off := int64(i) * chunk
				want := min(chunk, size-off)
				for {
					p, ok := pick()
					if !ok {
						mu.Lock()
						errs = append(errs, fmt.Errorf("range %d: every provider failed", i))
						mu.Unlock()
						return
					}
					resp, err := f.ask(ctx, p, &contentv1.ContentRequest{Cid: c.String(), Offset: uint64(off), Length: uint64(want)}, want)
					switch {
					case ctx.Err() != nil:
						return
					case err != nil || resp.GetBusy() || !resp.GetHeld() || int64(len(resp.GetData())) != want || int64(resp.GetSize()) != size:
						mu.Lock()
						bad[p] = true
						mu.Unlock()
						continue
					}
					copy(buf[off:], resp.GetData())
					mu.Lock()
					have[i] = true
					mu.Unlock()
					if isFallback[p] {
						f.fromFallback.Add(want)
					} else {
						f.fromPeers.Add(want)
					}
					break
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_, err := f.store.PutExpect(ctx, c, bytes.NewReader(buf), size)
	if err != nil {
		clear(have) // which provider lied is unknown: fetch every range again
	}
	return err
}

// ask sends one request to p and reads its answer, which may carry up to want bytes.
func (f *Fetcher) ask(ctx context.Context, p peer.ID, req *contentv1.ContentRequest, want int64) (*contentv1.ContentResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.PeerTimeout)
	defer cancel()
	s, err := f.h.NewStream(ctx, p, f.proto)
	if err != nil {
		return nil, err
	}
	defer func() { _ = s.Close() }()
	d, _ := ctx.Deadline()
	_ = s.SetDeadline(d)
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if _, err := protodelim.MarshalTo(s, req); err != nil {
		_ = s.Reset()
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, err
	}
	resp := &contentv1.ContentResponse{}
	// The answer is bounded by the range asked (plus framing), never by what the peer
	// decides to send.
	if err := (protodelim.UnmarshalOptions{MaxSize: want + 256}).UnmarshalFrom(bufio.NewReader(s), resp); err != nil {
		_ = s.Reset()
		return nil, err
	}
	if resp.GetError() != "" {
		return nil, fmt.Errorf("content: %s refused: %s", p, resp.GetError())
	}
	return resp, nil
}
