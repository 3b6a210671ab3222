package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"meshkit.dev/meshkit/bundle"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	southboundv1 "meshkit.dev/meshkit/proto/meshkit/southbound/v1"
	controlpb "meshkit.dev/meshkit/proto/omnirelay/control"
)

// watchLine is one line of `meshkit watch` output.
type watchLine struct {
	Time         string   `json:"time"`
	Version      string   `json:"version,omitempty"`
	Epoch        int64    `json:"epoch,omitempty"`
	FullSnapshot bool     `json:"full_snapshot"`
	Hash         string   `json:"hash,omitempty"`
	Bytes        int      `json:"payload_bytes,omitempty"`
	Resources    int      `json:"resources,omitempty"`
	Required     []string `json:"required_capabilities,omitempty"`
	Upserts      []string `json:"upserts,omitempty"`
	Removals     []string `json:"removals,omitempty"`
	Error        string   `json:"error,omitempty"`
	Backoff      int64    `json:"backoff_ms,omitempty"`
}

func (a *app) watch(fs *pflag.FlagSet) func(args []string) error {
	addr := fs.String("addr", "127.0.0.1:17421", "the agent's southbound address")
	nodeID := fs.String("node-id", "meshkit-watch", "node id to present")
	api := fs.String("api", "omnirelay", "omnirelay: omnirelay.control.ControlPlaneWatch as OmniRelay uses it; meshkit: meshkit.southbound.v1 with ACKs")
	once := fs.Bool("once", false, "exit after the first response")
	caps := listFlag{"core/v1"}
	fs.Var(&caps, "capabilities", "capabilities to advertise (default core/v1)")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *api != "omnirelay" && *api != "meshkit" {
			return usagef("--api must be omnirelay or meshkit")
		}
		conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return usagef("--addr %q: %v", *addr, err)
		}
		defer conn.Close()
		enc := json.NewEncoder(a.stdout)
		emit := func(l watchLine) error {
			l.Time = a.now().UTC().Format(time.RFC3339Nano)
			return enc.Encode(l)
		}
		if *api == "meshkit" {
			return a.watchMesh(conn, *nodeID, caps, *once, emit)
		}
		// As OmniRelay does: resume with the last token, reconnect after the backoff hint.
		c := controlpb.NewControlPlaneWatchClient(conn)
		var token *controlpb.WatchResumeToken
		for {
			var trailer metadata.MD
			w, err := c.Watch(a.ctx, &controlpb.ControlWatchRequest{NodeId: *nodeID, Capabilities: &controlpb.CapabilitySet{Items: caps}, ResumeToken: token}, grpc.Trailer(&trailer))
			if err != nil {
				return err
			}
			wait := time.Second
			for {
				r, err := w.Recv()
				if err != nil {
					if a.ctx.Err() != nil {
						return nil
					}
					if st := status.Code(err); st == codes.FailedPrecondition || st == codes.InvalidArgument {
						return fmt.Errorf("watch refused: %v", err)
					}
					if ms, perr := strconv.Atoi(firstOf(trailer.Get("backoff-ms"))); perr == nil && ms > 0 {
						wait = time.Duration(ms) * time.Millisecond
					}
					_ = emit(watchLine{Error: err.Error(), Backoff: wait.Milliseconds()})
					break
				}
				l := watchLine{Version: r.GetVersion(), Epoch: r.GetEpoch(), FullSnapshot: r.GetFullSnapshot(), Bytes: len(r.GetPayload()),
					Required: r.GetRequiredCapabilities(), Backoff: r.GetBackoff().GetMillis()}
				if e := r.GetError(); e != nil {
					l.Error = e.GetCode() + ": " + e.GetMessage()
				}
				if len(r.GetPayload()) > 0 {
					b, err := bundle.DecodeBundle(r.GetPayload())
					if err != nil {
						l.Error = "payload: " + err.Error()
					} else {
						l.Resources, l.Hash = bundle.Count(b), bundle.Hash(r.GetPayload()).String()
					}
				}
				if err := emit(l); err != nil {
					return err
				}
				if r.GetResumeToken() != nil {
					token = r.GetResumeToken()
				}
				if *once {
					return nil
				}
			}
			select {
			case <-a.ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

func (a *app) watchMesh(conn *grpc.ClientConn, nodeID string, caps []string, once bool, emit func(watchLine) error) error {
	w, err := southboundv1.NewSouthboundServiceClient(conn).Watch(a.ctx)
	if err != nil {
		return err
	}
	if err := w.Send(&southboundv1.WatchRequest{NodeId: nodeID, Capabilities: caps}); err != nil {
		return err
	}
	for {
		r, err := w.Recv()
		if err != nil {
			if a.ctx.Err() != nil || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		l := watchLine{Version: strconv.FormatUint(r.GetVersion(), 10), Epoch: int64(r.GetEpoch()), FullSnapshot: r.GetFull(),
			Required: r.GetRequiredCapabilities(), Hash: fmt.Sprintf("sha256:%x", r.GetBundleHash())}
		for _, u := range r.GetUpserts() {
			l.Upserts = append(l.Upserts, resourceName(u))
		}
		for _, k := range r.GetRemovals() {
			l.Removals = append(l.Removals, k.GetKind()+"/"+k.GetNamespace()+"/"+k.GetName())
		}
		if err := emit(l); err != nil {
			return err
		}
		if err := w.Send(&southboundv1.WatchRequest{ResponseNonce: r.GetNonce()}); err != nil { // ACK
			return err
		}
		if once {
			return nil
		}
	}
}

func resourceName(r *bundlev1.Resource) string {
	k, err := bundle.ResourceKey(r)
	if err != nil {
		return "?"
	}
	return k.Kind + "/" + k.Namespace + "/" + k.Name
}
