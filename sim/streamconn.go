package sim

import (
	"net"
	"sync"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/network"
)

// streamConn is a libp2p stream as a net.Conn, so gRPC (the xDS baseline) runs over the
// same simulated links as gossip. Bytes read and written are counted.
type streamConn struct {
	network.Stream
	in, out *atomic.Uint64
}

type peerAddr string

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return string(a) }

func (c *streamConn) LocalAddr() net.Addr  { return peerAddr(c.Conn().LocalPeer().String()) }
func (c *streamConn) RemoteAddr() net.Addr { return peerAddr(c.Conn().RemotePeer().String()) }

func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	n, err := c.Stream.Write(p)
	c.out.Add(uint64(n))
	return n, err
}

// Close resets the stream: gRPC closes a connection only when it is done with both
// directions.
func (c *streamConn) Close() error { return c.Stream.Reset() }

// streamListener accepts a protocol's incoming streams as connections.
type streamListener struct {
	addr    net.Addr
	conns   chan net.Conn
	done    chan struct{}
	once    sync.Once
	in, out *atomic.Uint64
}

func newStreamListener(addr string, in, out *atomic.Uint64) *streamListener {
	return &streamListener{addr: peerAddr(addr), conns: make(chan net.Conn), done: make(chan struct{}), in: in, out: out}
}

// handle is the host's stream handler for the protocol.
func (l *streamListener) handle(s network.Stream) {
	select {
	case l.conns <- &streamConn{Stream: s, in: l.in, out: l.out}:
	case <-l.done:
		_ = s.Reset()
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.addr }
