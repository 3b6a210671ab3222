package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"meshkit.dev/meshkit/internal/atomicfile"
	identityv1 "meshkit.dev/meshkit/proto/meshkit/identity/v1"
	capb "meshkit.dev/meshkit/proto/omnirelay/ca"
)

// enrolledFile keeps what enrolment answered (node, SPIFFE ID, trust bundle), so a
// restarted agent serves the trust bundle before any seed answers.
const enrolledFile = "enrolled.pb"

// Backoff of enrolment attempts while no seed answers.
const (
	enrolRetryMin = time.Second
	enrolRetryMax = 30 * time.Second
	// caRetryHint is the retry delay an OmniRelay client is given while no CA answers.
	caRetryHint = 5 * time.Second
)

// agentIdentity is the agent's enrolment with the domain CA and the trust bundle it
// serves its data plane.
type agentIdentity struct {
	dir string

	mu       sync.Mutex
	enrolled *identityv1.Enrolled // nil until enrolled
}

func loadIdentity(dir string) (*agentIdentity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	id := &agentIdentity{dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, enrolledFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return id, nil
	case err != nil:
		return nil, err
	}
	e := &identityv1.Enrolled{}
	if err := proto.Unmarshal(b, e); err != nil {
		return nil, fmt.Errorf("node: %s: %w", filepath.Join(dir, enrolledFile), err)
	}
	id.enrolled = e
	return id, nil
}

func (id *agentIdentity) save(e *identityv1.Enrolled) error {
	b, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(id.dir, enrolledFile), b, 0o600); err != nil {
		return err
	}
	id.mu.Lock()
	id.enrolled = e
	id.mu.Unlock()
	return nil
}

func (id *agentIdentity) get() *identityv1.Enrolled {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.enrolled
}

// enrolLoop enrols the agent as Config.NodeName with Config.JoinToken, trying each seed
// it is connected to, with backoff, until one accepts. An agent enrolled before (its
// libp2p key is its binding) skips it.
func (a *Agent) enrolLoop(ctx context.Context) {
	defer a.wg.Done()
	var backoff time.Duration
	for a.id.get() == nil {
		err := a.enrol(ctx)
		if err == nil {
			return
		}
		backoff = min(max(2*backoff, enrolRetryMin), enrolRetryMax)
		a.log.Warn("not enrolled yet; retrying", "node", a.cfg.NodeName, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-a.clock.After(backoff):
		}
	}
}

func (a *Agent) enrol(ctx context.Context) error {
	targets := a.rep.Node().IdentityTargets()
	if len(targets) == 0 {
		return errors.New("no seed connected")
	}
	var errs []error
	for _, p := range targets {
		resp, err := a.rep.Node().Identity(ctx, p, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Enrol{
			Enrol: &identityv1.Enrol{Token: a.cfg.JoinToken, Node: a.cfg.NodeName},
		}})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e := resp.GetError(); e != nil {
			errs = append(errs, fmt.Errorf("seed %s: %s", p, e.GetMessage()))
			continue
		}
		en := resp.GetEnrolled()
		if en == nil || en.GetNode() != a.cfg.NodeName || len(en.GetTrustBundle()) == 0 {
			errs = append(errs, fmt.Errorf("seed %s: an enrolment answer without node or trust bundle", p))
			continue
		}
		if err := a.id.save(en); err != nil {
			return err
		}
		a.log.Info("enrolled", "node", en.GetNode(), "spiffe_id", en.GetSpiffeId(), "seed", p)
		return nil
	}
	return errors.Join(errs...)
}

// caServer is omnirelay.ca.CertificateAuthority on the southbound listener. CSRs go to a
// seed for this agent's own node; the trust bundle is served from what the agent holds.
type caServer struct {
	capb.UnimplementedCertificateAuthorityServer
	s *Southbound
}

func (c *caServer) SubmitCsr(ctx context.Context, req *capb.CsrRequest) (*capb.CertResponse, error) {
	a := c.s.a
	if a.id.get() == nil {
		return nil, caUnavailable("this agent is not enrolled with the domain CA yet")
	}
	targets := a.rep.Node().IdentityTargets()
	var last error
	for _, p := range targets {
		resp, err := a.rep.Node().Identity(ctx, p, &identityv1.IdentityRequest{Call: &identityv1.IdentityRequest_Csr{Csr: req}})
		if err != nil {
			last = err
			continue
		}
		if e := resp.GetError(); e != nil {
			if codes.Code(e.GetCode()) == codes.Unavailable {
				last = errors.New(e.GetMessage())
				continue
			}
			return nil, status.Error(codes.Code(e.GetCode()), e.GetMessage())
		}
		cert := resp.GetCertificate()
		if cert == nil || len(cert.GetCertificate()) == 0 {
			last = fmt.Errorf("seed %s answered without a certificate", p)
			continue
		}
		return cert, nil
	}
	if last == nil {
		last = errors.New("no seed connected")
	}
	return nil, caUnavailable("the domain CA is unreachable: " + last.Error())
}

func (c *caServer) TrustBundle(context.Context, *capb.TrustBundleRequest) (*capb.TrustBundleResponse, error) {
	e := c.s.a.id.get()
	if e == nil {
		return nil, caUnavailable("this agent is not enrolled with the domain CA yet")
	}
	return &capb.TrustBundleResponse{TrustBundle: e.GetTrustBundle()}, nil
}

// caUnavailable is UNAVAILABLE with a RetryInfo hint, which gRPC clients honour.
func caUnavailable(msg string) error {
	st, err := status.New(codes.Unavailable, msg).WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(caRetryHint)})
	if err != nil {
		return status.Error(codes.Unavailable, msg)
	}
	return st.Err()
}
