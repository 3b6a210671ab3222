package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	syncv1 "meshkit.dev/meshkit/proto/meshkit/sync/v1"
)

const (
	maxSyncRequestBytes = 4 << 10
	syncStreamTimeout   = 30 * time.Second
	maxExchangedPeers   = 32
)

// ErrNotFound is returned by Fetch when the peer does not hold the bundle.
var ErrNotFound = errors.New("p2p: peer does not hold the bundle")

// Heads asks p for the newest bundle it holds of each variant.
func (n *Node) Heads(ctx context.Context, p peer.ID) ([]*syncv1.Head, error) {
	resp, err := n.request(ctx, p, &syncv1.SyncRequest{Op: &syncv1.SyncRequest_Heads{Heads: &syncv1.HeadsRequest{}}})
	if err != nil {
		return nil, err
	}
	h := resp.GetHeads()
	if h == nil {
		return nil, fmt.Errorf("p2p: heads from %s: %s", p, describe(resp))
	}
	return h.GetHeads(), nil
}

// Fetched is a bundle fetched from a peer, not yet verified.
type Fetched struct {
	Held *syncv1.HeldBundle
	// Encoded, when not nil, is the canonical encoding of Held, as the peer sent it; Held's
	// proof and payload alias it. A holder that keeps the bundle encoded (to persist it and
	// to serve it on) keeps these bytes rather than encoding Held again.
	Encoded []byte
}

// Fetch asks p for the bundle whose payload hashes to hash. The answer is untrusted:
// verify it (trust.Verifier.VerifyHeld) before use.
func (n *Node) Fetch(ctx context.Context, p peer.ID, hash []byte) (*Fetched, error) {
	buf, err := n.exchange(ctx, p, &syncv1.SyncRequest{Op: &syncv1.SyncRequest_Fetch{Fetch: &syncv1.FetchRequest{Hash: hash}}})
	if err != nil {
		return nil, err
	}
	if f := aliasHeld(buf); f != nil {
		return f, nil
	}
	resp, err := decodeAnswer(p, buf)
	if err != nil {
		return nil, err
	}
	b := resp.GetBundle()
	if b == nil {
		if resp.GetError() == errNotHeld {
			return nil, fmt.Errorf("%w (%s)", ErrNotFound, p)
		}
		return nil, fmt.Errorf("p2p: fetch from %s: %s", p, describe(resp))
	}
	return &Fetched{Held: b}, nil
}

// aliasHeld reads a fetch answer that is exactly SyncResponse{bundle: HeldBundle{proof,
// payload}} in canonical encoding (what serveSync writes) without copying: the result
// aliases answer. Anything else returns nil, for proto.Unmarshal to decode or refuse.
func aliasHeld(answer []byte) *Fetched {
	num, typ, n := protowire.ConsumeTag(answer)
	if n < 0 || num != syncResponseBundle || typ != protowire.BytesType {
		return nil
	}
	held, m := protowire.ConsumeBytes(answer[n:])
	if m < 0 || n+m != len(answer) {
		return nil
	}
	hb := &syncv1.HeldBundle{}
	rest := held
	for _, f := range []struct {
		num protowire.Number
		dst *[]byte
	}{{heldProof, &hb.Proof}, {heldPayload, &hb.Payload}} {
		if len(rest) == 0 {
			break
		}
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 || num != f.num || typ != protowire.BytesType {
			return nil
		}
		v, m := protowire.ConsumeBytes(rest[n:])
		if m < 0 {
			return nil
		}
		*f.dst, rest = v, rest[n+m:]
	}
	// Nothing left over, and no longer than proto.Marshal would write (no empty field, no
	// overlong varint): then held is byte for byte hb's encoding.
	if len(rest) != 0 || proto.Size(hb) != len(held) {
		return nil
	}
	return &Fetched{Held: hb, Encoded: held}
}

// ExchangePeers asks p for up to limit other peers of the domain.
func (n *Node) ExchangePeers(ctx context.Context, p peer.ID, limit uint32) ([]peer.AddrInfo, error) {
	resp, err := n.request(ctx, p, &syncv1.SyncRequest{Op: &syncv1.SyncRequest_Peers{Peers: &syncv1.PeersRequest{Limit: limit}}})
	if err != nil {
		return nil, err
	}
	pr := resp.GetPeers()
	if pr == nil {
		return nil, fmt.Errorf("p2p: peers from %s: %s", p, describe(resp))
	}
	return parsePeers(pr), nil
}

// parsePeers turns a peer-exchange answer into dialable peers; malformed entries are
// skipped, and at most maxExchangedPeers are kept.
func parsePeers(pr *syncv1.PeersResponse) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, pa := range pr.GetPeers() {
		if len(out) >= maxExchangedPeers {
			break
		}
		id, err := peer.IDFromBytes(pa.GetId())
		if err != nil {
			continue // a malformed entry is skipped, not trusted
		}
		ai := peer.AddrInfo{ID: id}
		for _, b := range pa.GetAddrs() {
			if a, err := ma.NewMultiaddrBytes(b); err == nil {
				ai.Addrs = append(ai.Addrs, a)
			}
		}
		if len(ai.Addrs) > 0 {
			out = append(out, ai)
		}
	}
	return out
}

func describe(resp *syncv1.SyncResponse) string {
	if e := resp.GetError(); e != "" {
		return e
	}
	return "unexpected answer"
}

const errNotHeld = "not held"

func (n *Node) request(ctx context.Context, p peer.ID, req *syncv1.SyncRequest) (*syncv1.SyncResponse, error) {
	buf, err := n.exchange(ctx, p, req)
	if err != nil {
		return nil, err
	}
	return decodeAnswer(p, buf)
}

func decodeAnswer(p peer.ID, buf []byte) (*syncv1.SyncResponse, error) {
	resp := &syncv1.SyncResponse{}
	if err := proto.Unmarshal(buf, resp); err != nil {
		return nil, fmt.Errorf("p2p: sync answer from %s: %w", p, err)
	}
	return resp, nil
}

// exchange sends req to p and returns the encoded answer.
func (n *Node) exchange(ctx context.Context, p peer.ID, req *syncv1.SyncRequest) ([]byte, error) {
	s, err := n.host.NewStream(network.WithAllowLimitedConn(ctx, "sync"), p, SyncProtocol(n.cfg.Domain))
	if err != nil {
		return nil, fmt.Errorf("p2p: open sync stream to %s: %w", p, err)
	}
	defer func() { _ = s.Close() }()
	deadline := time.Now().Add(syncStreamTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = s.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()

	w := &countingWriter{w: s, n: n}
	if _, err := protodelim.MarshalTo(w, req); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("p2p: sync request to %s: %w", p, err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("p2p: sync request to %s: %w", p, err)
	}
	buf, err := n.readAnswer(bufio.NewReaderSize(&countingReader{r: s, n: n}, 64))
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("p2p: sync answer from %s: %w", p, err)
	}
	return buf, nil
}

// readAnswer reads one length-delimited answer, as protodelim.UnmarshalFrom does
// (Config.MaxFetchBytes bounds it), into a buffer of its own: a fetched bundle aliases it
// (see aliasHeld) instead of being copied out of it. On the 1,000-agent 64 KiB
// simulation, copies of fetched bundles (and the page faults of the fresh memory they
// took) were the largest part of the CPU.
func (n *Node) readAnswer(r *bufio.Reader) ([]byte, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("length prefix: %w", err)
	}
	if size > uint64(n.cfg.MaxFetchBytes) {
		return nil, fmt.Errorf("answer of %d bytes is over the %d-byte limit", size, n.cfg.MaxFetchBytes)
	}
	return readBounded(r, int(size))
}

// answerChunk is the most readBounded allocates ahead of the bytes a peer has sent.
const answerChunk = 64 << 10

// readBounded reads exactly size bytes, growing its buffer as they arrive rather than
// allocating the size a peer declared before it has sent a byte: a peer that claims a
// large answer and stalls costs at most answerChunk, and what is allocated stays within
// twice what arrived. Answers up to answerChunk take one allocation, as before.
func readBounded(r io.Reader, size int) ([]byte, error) {
	buf := make([]byte, 0, min(size, answerChunk))
	for len(buf) < size {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(size-len(buf), max(cap(buf), answerChunk)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), size)])
		buf = buf[:len(buf)+n]
		if err != nil && len(buf) < size {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return buf, nil
}

func (n *Node) serveSync(s network.Stream) {
	defer func() { _ = s.Close() }()
	if !n.Admitted(s.Conn().RemotePeer()) {
		n.log.Debug("sync refused: the peer showed no certificate of the domain", "peer", s.Conn().RemotePeer())
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(syncStreamTimeout))
	req := &syncv1.SyncRequest{}
	r := bufio.NewReaderSize(&countingReader{r: s, n: n}, 128) // requests are tens of bytes
	if err := (protodelim.UnmarshalOptions{MaxSize: maxSyncRequestBytes}).UnmarshalFrom(r, req); err != nil {
		n.log.Debug("sync request refused", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	w := &countingWriter{w: s, n: n}
	if held := n.heldEncoded(req); held != nil {
		if err := writeHeldResponse(w, held); err != nil {
			_ = s.Reset()
		}
		return
	}
	resp := n.answer(s.Conn().RemotePeer(), req)
	if _, err := protodelim.MarshalTo(w, resp); err != nil {
		_ = s.Reset()
	}
}

// heldEncoded returns the encoded bundle a fetch asks for when the source keeps it
// encoded, else nil (the request is then answered by answer).
func (n *Node) heldEncoded(req *syncv1.SyncRequest) []byte {
	es, ok := n.cfg.Source.(EncodedSource)
	if !ok || len(req.GetFetch().GetHash()) != 32 {
		return nil
	}
	return es.HeldEncoded(req.GetFetch().GetHash())
}

// Field numbers of a fetch answer, from the descriptors.
var (
	syncResponseBundle = (&syncv1.SyncResponse{}).ProtoReflect().Descriptor().Fields().ByName("bundle").Number()
	heldProof          = (&syncv1.HeldBundle{}).ProtoReflect().Descriptor().Fields().ByName("proof").Number()
	heldPayload        = (&syncv1.HeldBundle{}).ProtoReflect().Descriptor().Fields().ByName("payload").Number()
)

// writeHeldResponse writes what protodelim.MarshalTo writes for
// SyncResponse{Result: Bundle(held)}, without copying held into a new message: the
// length prefix, the field's tag and length, then held as is.
func writeHeldResponse(w io.Writer, held []byte) error {
	size := protowire.SizeTag(syncResponseBundle) + protowire.SizeBytes(len(held))
	head := protowire.AppendVarint(make([]byte, 0, 2*binary.MaxVarintLen64+1), uint64(size))
	head = protowire.AppendTag(head, syncResponseBundle, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(len(held)))
	if _, err := w.Write(head); err != nil {
		return err
	}
	_, err := w.Write(held)
	return err
}

func (n *Node) answer(from peer.ID, req *syncv1.SyncRequest) *syncv1.SyncResponse {
	fail := func(msg string) *syncv1.SyncResponse {
		return &syncv1.SyncResponse{Result: &syncv1.SyncResponse_Error{Error: msg}}
	}
	switch op := req.GetOp().(type) {
	case *syncv1.SyncRequest_Heads:
		return &syncv1.SyncResponse{Result: &syncv1.SyncResponse_Heads{Heads: &syncv1.HeadsResponse{Heads: n.cfg.Source.Heads()}}}
	case *syncv1.SyncRequest_Fetch:
		if len(op.Fetch.GetHash()) != 32 {
			return fail("malformed: hash must be 32 bytes")
		}
		b := n.cfg.Source.Held(op.Fetch.GetHash())
		if b == nil {
			return fail(errNotHeld)
		}
		return &syncv1.SyncResponse{Result: &syncv1.SyncResponse_Bundle{Bundle: b}}
	case *syncv1.SyncRequest_Peers:
		limit := min(int(op.Peers.GetLimit()), maxExchangedPeers)
		out := &syncv1.PeersResponse{}
		for _, p := range n.conns.sample(2*limit, from) { // a few spare: some lack addresses
			if len(out.Peers) >= limit {
				break
			}
			pa := &syncv1.PeerAddrs{Id: []byte(p)}
			for _, a := range n.host.Peerstore().Addrs(p) {
				pa.Addrs = append(pa.Addrs, a.Bytes())
			}
			if len(pa.Addrs) > 0 {
				out.Peers = append(out.Peers, pa)
			}
		}
		return &syncv1.SyncResponse{Result: &syncv1.SyncResponse_Peers{Peers: out}}
	}
	return fail("malformed: unknown request")
}

type countingReader struct {
	r io.Reader
	n *Node
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.bytesIn.Add(uint64(k))
	return k, err
}

type countingWriter struct {
	w io.Writer
	n *Node
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.bytesOut.Add(uint64(k))
	return k, err
}

// ReportProtocol is the libp2p protocol agents report their state to seeds with.
func ReportProtocol(domain string) protocol.ID {
	return protocol.ID("/meshkit/" + domain + "/report/1")
}

const maxReportBytes = 16 << 10

// Report sends r to p (a seed). Peers that do not serve the report protocol refuse it.
func (n *Node) Report(ctx context.Context, p peer.ID, r *syncv1.NodeReport) error {
	s, err := n.host.NewStream(ctx, p, ReportProtocol(n.cfg.Domain))
	if err != nil {
		return fmt.Errorf("p2p: report to %s: %w", p, err)
	}
	defer func() { _ = s.Close() }()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := protodelim.MarshalTo(&countingWriter{w: s, n: n}, r); err != nil {
		_ = s.Reset()
		return fmt.Errorf("p2p: report to %s: %w", p, err)
	}
	return s.CloseWrite()
}

// ReportTargets lists the connected peers that accept reports (seeds), admitted ones only
// when the node checks certificates: a seed takes reports from peers it admitted, which it
// does when they show each other their certificates.
func (n *Node) ReportTargets() []peer.ID {
	proto := ReportProtocol(n.cfg.Domain)
	var out []peer.ID
	for _, p := range n.host.Network().Peers() {
		if !n.Admitted(p) {
			continue
		}
		if ok, err := n.host.Peerstore().SupportsProtocols(p, proto); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	return out
}

func (n *Node) serveReport(s network.Stream) {
	defer func() { _ = s.Close() }()
	if !n.Admitted(s.Conn().RemotePeer()) {
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	r := &syncv1.NodeReport{}
	if err := (protodelim.UnmarshalOptions{MaxSize: maxReportBytes}).UnmarshalFrom(bufio.NewReader(&countingReader{r: s, n: n}), r); err != nil {
		n.log.Debug("report refused", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	n.cfg.OnReport(s.Conn().RemotePeer(), r)
}
