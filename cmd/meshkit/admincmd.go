package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aymanbagabas/go-udiff"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"meshkit.dev/meshkit/bundle"
	"meshkit.dev/meshkit/internal/atomicfile"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/seed/boltstore"
)

// clientFlags say how to reach a seed's admin API.
type clientFlags struct {
	addr, tokenFile, ca, cert, key, output string
	timeout                                time.Duration
	insecure                               bool
}

func (c *clientFlags) register(fs *pflag.FlagSet, outputs string) {
	fs.StringVar(&c.addr, "seed", cmpOr(os.Getenv("MESHKIT_SEED"), "127.0.0.1:17400"), "seed admin gRPC address (env MESHKIT_SEED)")
	fs.StringVar(&c.tokenFile, "token-file", os.Getenv("MESHKIT_TOKEN_FILE"), "file holding a bearer token (env MESHKIT_TOKEN_FILE; or the token itself in MESHKIT_TOKEN)")
	fs.StringVar(&c.ca, "tls-ca", "", "verify the seed's TLS certificate against this CA (enables TLS)")
	fs.StringVar(&c.cert, "tls-cert", "", "client certificate for mTLS")
	fs.StringVar(&c.key, "tls-key", "", "private key of --tls-cert")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the seed")
	fs.BoolVar(&c.insecure, "insecure", false, "send the bearer token without TLS to a seed that is not on loopback (it can be read and replayed by anyone on the path)")
	if outputs != "" {
		fs.StringVarP(&c.output, "output", "o", "text", "output format: "+outputs)
	}
}

// dial connects and returns a client and a context carrying the token.
func (c *clientFlags) dial() (adminv1.AdminServiceClient, context.Context, func(), error) {
	creds := insecure.NewCredentials()
	if c.ca != "" || c.cert != "" {
		cfg, err := c.tlsConfig()
		if err != nil {
			return nil, nil, nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(creds), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(seed.MaxRequestBytes), grpc.MaxCallSendMsgSize(seed.MaxRequestBytes))}
	r := &redirect{c: c, opts: dialOpts}
	conn, err := grpc.NewClient(c.addr, append(dialOpts, grpc.WithUnaryInterceptor(r.intercept))...)
	if err != nil {
		return nil, nil, nil, err
	}
	r.conns = append(r.conns, conn)
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	token, err := c.token()
	if err == nil {
		err = c.checkPlaintext(c.addr, token, c.ca != "" || c.cert != "")
	}
	if err != nil {
		cancel()
		conn.Close()
		return nil, nil, nil, err
	}
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return adminv1.NewAdminServiceClient(conn), ctx, func() { cancel(); r.close() }, nil
}

// redirect follows a follower seed's answer to its domain's leader: a call refused with
// the meshkit-leader trailer is made again, once, at the address it names, with the same
// credentials (and the same refusal to send a token in clear off loopback).
type redirect struct {
	c     *clientFlags
	opts  []grpc.DialOption
	conns []*grpc.ClientConn
}

func (r *redirect) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var trailer metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts, grpc.Trailer(&trailer))...)
	leader := trailer.Get(seed.LeaderHeader)
	if status.Code(err) != codes.Unavailable || len(leader) == 0 || leader[0] == cc.Target() {
		return err
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	if err := r.c.checkPlaintext(leader[0], strings.Join(md.Get("authorization"), ""), r.c.ca != "" || r.c.cert != ""); err != nil {
		return err
	}
	conn, derr := grpc.NewClient(leader[0], r.opts...)
	if derr != nil {
		return err
	}
	r.conns = append(r.conns, conn)
	return conn.Invoke(ctx, method, req, reply, opts...)
}

func (r *redirect) close() {
	for _, c := range r.conns {
		c.Close()
	}
}

// checkPlaintext refuses to send a bearer token in clear to an address other machines
// can see, unless --insecure says to.
func (c *clientFlags) checkPlaintext(addr, token string, tls bool) error {
	if token == "" || tls || c.insecure || loopback(addr) {
		return nil
	}
	return usagef("refusing to send the bearer token without TLS to %s, which is not a loopback address: give --tls-ca CA.pem (the seed's --tls-cert issuer), or --insecure to send it in clear anyway", addr)
}

// tlsConfig is the client TLS configuration of --tls-ca, --tls-cert and --tls-key (the
// admin API's and the registry's).
func (c *clientFlags) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.ca != "" {
		pem, err := os.ReadFile(c.ca)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificates", c.ca)
		}
	}
	if c.cert != "" {
		cert, err := tls.LoadX509KeyPair(c.cert, c.key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// token is the bearer token from --token-file or MESHKIT_TOKEN ("" for none).
func (c *clientFlags) token() (string, error) {
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv("MESHKIT_TOKEN")), nil
}

// session is an open connection to a seed's admin API.
type session struct {
	adminv1.AdminServiceClient
	ctx   context.Context
	close func()
}

// open checks --output against outputs (when the command has one), dials, and returns
// the session. The caller defers s.close().
func (c *clientFlags) open(outputs ...string) (*session, error) {
	if len(outputs) > 0 {
		if err := c.checkOutput(outputs...); err != nil {
			return nil, err
		}
	}
	cl, ctx, done, err := c.dial()
	if err != nil {
		return nil, err
	}
	return &session{AdminServiceClient: cl, ctx: ctx, close: done}, nil
}

// openNoArgs is open for a command that takes flags only.
func (c *clientFlags) openNoArgs(args []string, outputs ...string) (*session, error) {
	if err := noArgs(args); err != nil {
		return nil, err
	}
	return c.open(outputs...)
}

// rpcError renders a gRPC error as the seed's message, and what to do about it where
// there is something to do.
func rpcError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	hint := map[codes.Code]string{
		codes.Unavailable:      "is a seed running there? Give its admin address with --seed or MESHKIT_SEED",
		codes.Unauthenticated:  "give a token with --token-file FILE, MESHKIT_TOKEN_FILE or MESHKIT_TOKEN (a seed without --policy keeps one in DATA/admin.token)",
		codes.PermissionDenied: "meshkit policy add creates a principal with the scope and tenants this needs",
		codes.DeadlineExceeded: "the seed did not answer within --timeout",
	}[st.Code()]
	if hint != "" {
		return fmt.Errorf("%s: %s (%s)", st.Code(), st.Message(), hint)
	}
	return fmt.Errorf("%s: %s", st.Code(), st.Message())
}

func (c *clientFlags) checkOutput(allowed ...string) error {
	for _, a := range allowed {
		if c.output == a {
			return nil
		}
	}
	return usagef("--output must be one of %s", strings.Join(allowed, ", "))
}

func (a *app) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	var out json.RawMessage = b
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func (a *app) printChanges(changes []*adminv1.Change) {
	if len(changes) == 0 {
		fmt.Fprintln(a.stdout, "no changes")
	}
	for _, c := range changes {
		fmt.Fprintf(a.stdout, "%s %s %s/%s\n", c.GetOp(), c.GetKind(), c.GetNamespace(), c.GetName())
	}
}

// resourceFiles are the resources of -f, with where each was read from.
type resourceFiles struct {
	objs      []bundle.Object
	resources []*adminv1.Resource
}

func readResources(path string) (*resourceFiles, error) {
	objs, err := bundle.LoadPath(path)
	if err != nil {
		return nil, err
	}
	rf := &resourceFiles{objs: objs}
	for _, o := range objs {
		r, err := seed.ResourceFromObject(o)
		if err != nil {
			return nil, err
		}
		rf.resources = append(rf.resources, r)
	}
	return rf, nil
}

// locate adds "(file:line)" after each resource the seed's message names, so a refusal of
// the seed points into the files as `bundle build` does.
func (rf *resourceFiles) locate(err error) error {
	msg := rpcError(err).Error()
	for _, o := range rf.objs {
		if o.Source == "" {
			continue
		}
		name := fmt.Sprintf("%s %s/%s", o.Kind, o.Metadata.GetNamespace(), o.Metadata.GetName())
		msg = strings.ReplaceAll(msg, name+":", name+" ("+o.Source+"):")
	}
	return errors.New(msg)
}

// yamlChange is one resource that applying the files would change, as a unified diff of
// its canonical YAML (what `kubectl diff` shows).
type yamlChange struct {
	Op        string `json:"op"` // "+" created, "~" changed
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Source    string `json:"source,omitempty"`
	Diff      string `json:"diff"`
}

// yamlChanges compares each resource of the files with what the seed stores (one List per
// kind), in canonical YAML. Resources the seed holds and the files do not are no change:
// apply does not delete.
func (rf *resourceFiles) yamlChanges(s *session) ([]yamlChange, error) {
	live := map[bundle.Key]bundle.Object{}
	kinds := map[string]bool{}
	for _, o := range rf.objs {
		if kinds[o.Kind] {
			continue
		}
		kinds[o.Kind] = true
		resp, err := s.List(s.ctx, &adminv1.ListRequest{Kind: o.Kind})
		if err != nil {
			return nil, rpcError(err)
		}
		for _, r := range resp.GetResources() {
			lo, err := seed.ObjectFromResource(r)
			if err != nil {
				return nil, err
			}
			live[lo.Key()] = lo
		}
	}
	var out []yamlChange
	for _, o := range rf.objs {
		k := o.Key()
		var before, after bytes.Buffer
		if err := bundle.EncodeYAML(&after, []bundle.Object{o}); err != nil {
			return nil, err
		}
		op := "+"
		if lo, ok := live[k]; ok {
			op = "~"
			if err := bundle.EncodeYAML(&before, []bundle.Object{lo}); err != nil {
				return nil, err
			}
		}
		if before.String() == after.String() {
			continue
		}
		path := fmt.Sprintf("%s/%s/%s", k.Kind, k.Namespace, k.Name)
		out = append(out, yamlChange{Op: op, Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Source: o.Source,
			Diff: udiff.Unified("live/"+path, "merged/"+path, before.String(), after.String())})
	}
	return out, nil
}

func (a *app) printYAMLChanges(changes []yamlChange, output string) error {
	if output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Changes []yamlChange `json:"changes"`
		}{Changes: append([]yamlChange{}, changes...)})
	}
	for _, c := range changes {
		fmt.Fprint(a.stdout, c.Diff)
	}
	return nil
}

// diff shows, as unified diffs of YAML, what applying the files would change, after the
// seed has validated them. Exit 0: nothing would change; 1: something would; 2: an error
// (kubectl diff's contract).
func (a *app) diff(fs *pflag.FlagSet) func(args []string) error {
	from := fs.StringP("filename", "f", "", "YAML resource file or directory")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		changes, err := a.validateAndDiff(args, *from, &c, func(s *session, rs []*adminv1.Resource) error {
			_, err := s.Diff(s.ctx, &adminv1.DiffRequest{Resources: rs})
			return err
		})
		if err != nil {
			return &exitError{code: 2, err: err}
		}
		if err := a.printYAMLChanges(changes, c.output); err != nil {
			return &exitError{code: 2, err: err}
		}
		if len(changes) > 0 {
			return &exitError{code: exitFail}
		}
		return nil
	}
}

// validateAndDiff reads -f, has the seed check the resources (check), and computes the
// YAML diff against what the seed stores.
func (a *app) validateAndDiff(args []string, from string, c *clientFlags, check func(*session, []*adminv1.Resource) error) ([]yamlChange, error) {
	if err := noArgs(args); err != nil {
		return nil, err
	}
	if err := required("filename", from); err != nil {
		return nil, err
	}
	rf, err := readResources(from)
	if err != nil {
		return nil, err
	}
	s, err := c.open("text", "json")
	if err != nil {
		return nil, err
	}
	defer s.close()
	if err := check(s, rf.resources); err != nil {
		return nil, rf.locate(err)
	}
	return rf.yamlChanges(s)
}

// apply stores the files' resources on the seed; --dry-run shows the YAML diff instead.
func (a *app) apply(fs *pflag.FlagSet) func(args []string) error {
	from := fs.StringP("filename", "f", "", "YAML resource file or directory")
	dry := fs.Bool("dry-run", false, "validate on the seed and show the YAML diff, store nothing")
	wait := fs.String("wait", "", "return once the change is published (--wait), or served by --wait-share of the agents reporting to the seed (--wait=agents)")
	fs.Lookup("wait").NoOptDefVal = "published"
	share := fs.Float64("wait-share", 1, "with --wait=agents: the share of reporting agents that must serve the change")
	waitTimeout := fs.Duration("wait-timeout", 2*time.Minute, "how long --wait waits")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if *wait != "" && *wait != "published" && *wait != "agents" {
			return usagef("--wait is published (the default) or agents, not %q", *wait)
		}
		if *share <= 0 || *share > 1 {
			return usagef("--wait-share must be in (0, 1], not %v", *share)
		}
		if *wait != "" {
			c.timeout = max(c.timeout, *waitTimeout+10*time.Second)
		}
		if *dry {
			changes, err := a.validateAndDiff(args, *from, &c, func(s *session, rs []*adminv1.Resource) error {
				_, err := s.Apply(s.ctx, &adminv1.ApplyRequest{Resources: rs, DryRun: true})
				return err
			})
			if err != nil {
				return err
			}
			if err := a.printYAMLChanges(changes, c.output); err != nil {
				return err
			}
			if c.output != "json" {
				fmt.Fprintf(a.stdout, "dry run: nothing stored; %d resource(s) would change\n", len(changes))
			}
			return nil
		}
		if err := noArgs(args); err != nil {
			return err
		}
		if err := required("filename", *from); err != nil {
			return err
		}
		rf, err := readResources(*from)
		if err != nil {
			return err
		}
		s, err := c.open("text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.Apply(s.ctx, &adminv1.ApplyRequest{Resources: rf.resources})
		if err != nil {
			return rf.locate(err)
		}
		if c.output == "json" {
			if err := a.printJSON(resp); err != nil {
				return err
			}
		} else {
			a.printChanges(resp.GetChanges())
			if resp.GetAuditSeq() > 0 {
				fmt.Fprintf(a.stdout, "applied %d resource(s); state %s; audit entry %d\n", len(rf.resources), resp.GetStateHash(), resp.GetAuditSeq())
			}
		}
		if *wait == "" || resp.GetAuditSeq() == 0 {
			return nil
		}
		return a.waitPublished(s, resp.GetAuditSeq(), *wait == "agents", *share, *waitTimeout, c.output != "json")
	}
}

// waitPublished polls the seed's status until a published version holds audit entry seq
// and, with agents, until share of the agents reporting to the seed serve it or a newer one.
func (a *app) waitPublished(s *session, seq uint64, agents bool, share float64, timeout time.Duration, say bool) error {
	deadline := a.now().Add(timeout)
	published := false
	var last *adminv1.StatusResponse
	for {
		st, err := s.Status(s.ctx, &adminv1.StatusRequest{})
		if err != nil {
			return rpcError(err)
		}
		last = st
		if !published && st.GetPublishedAuditSeq() >= seq {
			published = true
			if say {
				fmt.Fprintf(a.stdout, "published: epoch %d version %d\n", st.GetEpoch(), st.GetVersion())
			}
			if !agents {
				return nil
			}
		}
		if published {
			serving, total := servingShare(st, st.GetEpoch(), st.GetVersion())
			if total > 0 && float64(serving) >= share*float64(total) {
				if say {
					fmt.Fprintf(a.stdout, "served by %d of %d reporting agent(s)\n", serving, total)
				}
				return nil
			}
		}
		if a.now().After(deadline) {
			break
		}
		select {
		case <-s.ctx.Done():
			return s.ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !published {
		return fmt.Errorf("not published after %s (seed version %d, pending %t, last error %q): see meshkit status", timeout, last.GetVersion(), last.GetPending(), last.GetLastError())
	}
	serving, total := servingShare(last, last.GetEpoch(), last.GetVersion())
	return fmt.Errorf("published as version %d, but served by %d of %d reporting agent(s) after %s, short of --wait-share %v: see meshkit status", last.GetVersion(), serving, total, timeout, share)
}

// servingShare counts the reporting agents that serve (epoch, version) or newer, of all.
func servingShare(st *adminv1.StatusResponse, epoch, version uint64) (serving, total uint32) {
	for _, c := range st.GetServing() {
		total += c.GetAgents()
		if c.GetEpoch() > epoch || (c.GetEpoch() == epoch && c.GetVersion() >= version) {
			serving += c.GetAgents()
		}
	}
	return serving, total
}

func (a *app) get(fs *pflag.FlagSet) func(args []string) error {
	ns := fs.StringP("namespace", "n", "", "namespace (default: all for a list, \"default\" for one name)")
	tenant := fs.String("tenant", "", "only this tenant's resources")
	var c clientFlags
	c.register(fs, "text, json, yaml")
	return func(args []string) error {
		pos := args
		s, err := c.open("text", "json", "yaml")
		if err != nil {
			return err
		}
		defer s.close()
		if len(pos) < 1 || len(pos) > 2 {
			return usagef("want KIND [NAME]; kinds: %s", strings.Join(bundle.Kinds(), ", "))
		}
		var rs []*adminv1.Resource
		if len(pos) == 2 {
			resp, err := s.Get(s.ctx, &adminv1.GetRequest{Kind: pos[0], Namespace: *ns, Name: pos[1]})
			if err != nil {
				return rpcError(err)
			}
			rs = []*adminv1.Resource{resp.GetResource()}
		} else {
			resp, err := s.List(s.ctx, &adminv1.ListRequest{Kind: pos[0], Namespace: *ns, Tenant: *tenant})
			if err != nil {
				return rpcError(err)
			}
			rs = resp.GetResources()
		}
		switch c.output {
		case "json":
			return a.printJSON(&adminv1.ListResponse{Resources: rs})
		case "yaml":
			return a.printYAML(rs)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tTENANT\tREGION")
		for _, r := range rs {
			o, err := seed.ObjectFromResource(r)
			if err != nil {
				return err
			}
			md := o.Metadata
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Kind, md.GetNamespace(), md.GetName(), md.GetTenant(), md.GetRegion())
		}
		return tw.Flush()
	}
}

// printYAML writes resources in the canonical form apply reads (bundle.EncodeYAML), so
// `meshkit get … -o yaml` round-trips into a GitOps repository unchanged.
func (a *app) printYAML(rs []*adminv1.Resource) error {
	objs := make([]bundle.Object, 0, len(rs))
	for _, r := range rs {
		o, err := seed.ObjectFromResource(r)
		if err != nil {
			return err
		}
		objs = append(objs, o)
	}
	return bundle.EncodeYAML(a.stdout, objs)
}

func (a *app) del(fs *pflag.FlagSet) func(args []string) error {
	ns := fs.StringP("namespace", "n", "", "namespace (default \"default\")")
	dry := fs.Bool("dry-run", false, "check without deleting")
	var c clientFlags
	c.register(fs, "")
	return func(args []string) error {
		pos := args
		s, err := c.open()
		if err != nil {
			return err
		}
		defer s.close()
		if len(pos) != 2 {
			return usagef("want KIND NAME")
		}
		resp, err := s.Delete(s.ctx, &adminv1.DeleteRequest{Kind: pos[0], Namespace: *ns, Name: pos[1], DryRun: *dry})
		if err != nil {
			return rpcError(err)
		}
		a.printChanges(resp.GetChanges())
		return nil
	}
}

func (a *app) history(fs *pflag.FlagSet) func(args []string) error {
	limit := fs.Uint("limit", 20, "how many publications")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.History(s.ctx, &adminv1.HistoryRequest{Limit: uint32(*limit)})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tEPOCH\tPUBLISHED\tVARIANTS\tSNAPSHOT BYTES\tDELTA BYTES\tAUDIT")
		for _, p := range resp.GetPublications() {
			var snap, delta uint64
			for _, v := range p.GetVariants() {
				snap, delta = snap+v.GetSnapshotBytes(), delta+v.GetDeltaBytes()
			}
			fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\n", p.GetVersion(), p.GetEpoch(), p.GetPublishedAt().AsTime().Format(time.RFC3339), len(p.GetVariants()), snap, delta, p.GetAuditSeq())
		}
		return tw.Flush()
	}
}

func (a *app) status(fs *pflag.FlagSet) func(args []string) error {
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		st, err := s.Status(s.ctx, &adminv1.StatusRequest{})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(st)
		}
		fmt.Fprintf(a.stdout, "domain %s epoch %d version %d resources %d pending %t\nstate %s\n", st.GetDomain(), st.GetEpoch(), st.GetVersion(), st.GetResources(), st.GetPending(), st.GetStateHash())
		if st.GetLastError() != "" {
			fmt.Fprintf(a.stdout, "last publish error: %s\n", st.GetLastError())
		}
		if l := st.GetLeadership(); l != nil {
			var fs []string
			for _, f := range l.GetFollowers() {
				fs = append(fs, fmt.Sprintf("%s (%s)", printable(f.GetId()), printable(f.GetAdmin())))
			}
			fmt.Fprintf(a.stdout, "leader %s (%s) term %d; answered by %s\nfollowers: %s\n", printable(l.GetLeaderId()), printable(l.GetLeaderAdmin()), l.GetTerm(),
				printable(l.GetThisSeed()), cmpOr(strings.Join(fs, ", "), "none"))
		}
		fmt.Fprintf(a.stdout, "agents reporting (last 10 min): %d\n", st.GetReportingNodes())
		for _, n := range st.GetNacks() {
			fmt.Fprintf(a.stdout, "  version %d NACKed by %d data-plane client(s); last error: %s\n", n.GetVersion(), n.GetCount(), printable(n.GetLastError()))
		}
		for _, e := range st.GetExtensions() {
			fmt.Fprintf(a.stdout, "  extension %s (%s): admitted by %d, rejected by %d, unavailable on %d agent(s)\n",
				printable(e.GetArtifact()), printable(e.GetAbi()), e.GetAdmitted(), e.GetRejected(), e.GetUnavailable())
			for _, r := range e.GetReasons() {
				fmt.Fprintf(a.stdout, "    %s\n", printable(r))
			}
		}
		return nil
	}
}

// printable escapes what a terminal would act on (control characters, escape sequences,
// invalid UTF-8) in text that came from agents or other peers, as Go quoting does, and
// leaves plain text as it is.
func printable(s string) string {
	q := strconv.QuoteToGraphic(s)
	if q[1:len(q)-1] == strings.ReplaceAll(s, `"`, `\"`) && !strings.Contains(s, `\`) {
		return s
	}
	return q
}

func (a *app) audit(fs *pflag.FlagSet) func(args []string) error {
	after := fs.Uint64("after", 0, "entries after this sequence number")
	limit := fs.Uint("limit", 100, "how many entries")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		s, err := c.openNoArgs(args, "text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		resp, err := s.Audit(s.ctx, &adminv1.AuditRequest{AfterSeq: *after, Limit: uint32(*limit)})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		for _, e := range resp.GetEntries() {
			subj := strings.Join(e.GetSubjects(), ", ")
			if e.GetAction() == "publish" {
				subj = fmt.Sprintf("version %d (%d variant(s))", e.GetVersion(), len(e.GetSubjects()))
			}
			fmt.Fprintf(a.stdout, "%d %s %-7s by %s: %s\n", e.GetSeq(), e.GetTime().AsTime().Format(time.RFC3339), e.GetAction(), e.GetActor(), subj)
		}
		return nil
	}
}

func (a *app) auditVerify(fs *pflag.FlagSet) func(args []string) error {
	data := fs.String("data", "", "verify a stopped seed's data directory directly")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		if err := c.checkOutput("text", "json"); err != nil {
			return err
		}
		if err := noArgs(args); err != nil {
			return err
		}
		var resp *adminv1.VerifyAuditResponse
		if *data != "" {
			st, err := boltstore.Open(*data, time.Second)
			if err != nil {
				return err
			}
			defer st.Close()
			if resp, err = seed.VerifyStore(context.Background(), st); err != nil {
				return err
			}
		} else {
			cl, ctx, done, err := c.dial()
			if err != nil {
				return err
			}
			defer done()
			if resp, err = cl.VerifyAudit(ctx, &adminv1.VerifyAuditRequest{}); err != nil {
				return rpcError(err)
			}
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintf(a.stdout, "OK audit chain of %d entries verifies; head %s; stored state %s matches it\n", resp.GetEntries(), resp.GetHeadHash(), resp.GetStateHash())
		return nil
	}
}

func (a *app) bundleFetch(fs *pflag.FlagSet) func(args []string) error {
	out := fs.String("out", "", "file to write the signed envelope to")
	var caps listFlag
	fs.Var(&caps, "capabilities", "capabilities of the node (default: the full variant)")
	delta := fs.Bool("delta", false, "fetch the delta from the previous version")
	var c clientFlags
	c.register(fs, "")
	return func(args []string) error {
		s, err := c.openNoArgs(args)
		if err != nil {
			return err
		}
		defer s.close()
		if err := required("out", *out); err != nil {
			return err
		}
		resp, err := s.GetBundle(s.ctx, &adminv1.GetBundleRequest{Capabilities: caps, Delta: *delta})
		if err != nil {
			return rpcError(err)
		}
		if err := atomicfile.WriteFile(*out, resp.GetEnvelope(), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "wrote %s: epoch %d version %d requires %s (%d bytes)\n", *out, resp.GetEpoch(), resp.GetVersion(), strings.Join(resp.GetRequiredCapabilities(), ","), len(resp.GetEnvelope()))
		return nil
	}
}
