package election

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	leadershipv1 "meshkit.dev/meshkit/proto/omnirelay/mesh/control/v1"
)

// ScopeKind is the scope_kind of a MeshKit domain's token.
const ScopeKind = "domain"

// Service serves OmniRelay's LeadershipControlService from an Elector.
type Service struct {
	leadershipv1.UnimplementedLeadershipControlServiceServer
	E *Elector
	// Stop, when closed, ends every subscription (Unavailable), so that a server stopping
	// gracefully does not wait for streams that never end.
	Stop <-chan struct{}
}

// Register adds the service to srv.
func (s *Service) Register(srv *grpc.Server) {
	leadershipv1.RegisterLeadershipControlServiceServer(srv, s)
}

// Subscribe sends one SNAPSHOT per current token, then every event, until the client
// goes, the seed stops, or the client falls too far behind (Unavailable: resubscribe).
func (s *Service) Subscribe(req *leadershipv1.LeadershipSubscribeRequest, stream grpc.ServerStreamingServer[leadershipv1.LeadershipEvent]) error {
	if req.GetScope() != "" && req.GetScope() != s.E.cfg.Scope {
		return status.Errorf(codes.NotFound, "this seed follows scope %q only, not %q", s.E.cfg.Scope, req.GetScope())
	}
	snap, events, cancel := s.E.Subscribe()
	defer cancel()
	for _, ev := range snap {
		if err := stream.Send(ToProto(ev)); err != nil {
			return err
		}
	}
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-s.Stop:
			return status.Error(codes.Unavailable, "this seed's admin server is restarting (its role changed); subscribe again")
		case ev, ok := <-events:
			if !ok {
				return status.Error(codes.Unavailable, "the subscription ended (the seed is stopping, or this subscriber fell 64 events behind); subscribe again")
			}
			if err := stream.Send(ToProto(ev)); err != nil {
				return err
			}
		}
	}
}

// ToProto is ev in OmniRelay's wire form. The term and the fence token are both the
// leader key's etcd creation revision, the epoch of the leader's bundles.
func ToProto(ev Event) *leadershipv1.LeadershipEvent {
	tok := &leadershipv1.LeadershipToken{
		Scope: ev.Token.Scope, ScopeKind: ScopeKind, LeaderId: ev.Token.LeaderID, Term: ev.Token.Term, FenceToken: ev.Token.Term,
		IssuedAt: timestamppb.New(ev.Token.IssuedAt), ExpiresAt: timestamppb.New(ev.Token.ExpiresAt),
	}
	if ev.Token.Admin != "" {
		tok.Labels = map[string]string{"admin": ev.Token.Admin}
	}
	return &leadershipv1.LeadershipEvent{
		Kind: leadershipv1.LeadershipEventKind(ev.Kind), Scope: ev.Token.Scope, LeaderId: ev.Token.LeaderID, Token: tok,
		Reason: ev.Reason, CorrelationId: fmt.Sprintf("%s/%d", ev.Token.Scope, ev.Token.Term), OccurredAt: timestamppb.New(ev.At),
	}
}
