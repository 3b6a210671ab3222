package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the operation ran and failed, e.g. a bundle was refused
	exitUsage = 2 // the command line was wrong
)

// app carries what every command needs; tests build one with their own writers and clock.
type app struct {
	ctx            context.Context // ends long-running commands (tests cancel it; main never does)
	stdout, stderr io.Writer
	now            func() time.Time
}

// command is one subcommand: its synopsis (cobra's Use: the name, then the arguments), a
// one-line summary, and build, which defines the command's flags on fs and returns what
// runs once they are parsed.
type command struct {
	use, short, long string
	build            func(a *app, fs *pflag.FlagSet) func(args []string) error
	sub              []command
}

// usageError marks an error of the command line (exit 2) rather than of the operation.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError ends a command with a given exit code; with no err it prints nothing (diff's
// "something differs").
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{ctx: context.Background(), stdout: stdout, stderr: stderr, now: time.Now}
	return a.main(args)
}

func (a *app) commands() []command {
	return []command{
		{use: "key", short: "generate signing keys", sub: []command{
			{use: "gen --out FILE", short: "generate an Ed25519 key pair", build: (*app).keyGen},
		}},
		{use: "root", short: "create, rotate, sign and verify domain roots", sub: []command{
			{use: "init --domain D --root-key KEYFILE... --threshold N --seed-key PUBFILE... --expires DUR --out root.json", short: "create and sign version 1 of a domain root", build: (*app).rootInit},
			{use: "rotate --prev root.json --root-key KEYFILE... --seed-key PUBFILE... --sign-key OLDROOTKEY... --out 2.root.json", short: "create the next version of a domain root", build: (*app).rootRotate},
			{use: "sign --key KEY [--prev PREV.json] --in FILE [--out FILE]", short: "add a signature to a root (multi-party signing)", build: (*app).rootSign},
			{use: "verify [--at RFC3339] ROOT [ROTATION...]", short: "verify a root and its rotations", build: (*app).rootVerify},
			{use: "publish ROOT", short: "put the next root version in force on a running seed, which carries it to every agent (admin)", build: (*app).rootPublish},
		}},
		{use: "bundle", short: "build, sign, verify, inspect and diff bundles", sub: []command{
			{use: "build -f FILE_OR_DIR --domain D --epoch E --version V --expires DUR --out FILE", short: "build an unsigned bundle from YAML resources", build: (*app).bundleBuild},
			{use: "sign --key KEY --in FILE --out FILE", short: "sign a bundle", build: (*app).bundleSign},
			{use: "verify --root root.json [--root-update FILE...] [--state FILE] [--at RFC3339] FILE", short: "verify a signed bundle against a root", build: (*app).bundleVerify},
			{use: "inspect FILE", short: "show a bundle", build: (*app).bundleInspect},
			{use: "diff A B", short: "show what changed between two bundles", build: (*app).bundleDiff},
			{use: "fetch --out FILE", short: "fetch the newest signed bundle from a seed", build: (*app).bundleFetch},
		}},
		{use: "dev", short: "run a whole domain on loopback: a seed with the examples and N agents serving OmniRelay's watch", build: (*app).dev},
		{use: "sim -f SCENARIO.yaml", short: "simulate a domain (partitions, churn, attacks) over in-memory links; --baseline xds compares a hub", build: (*app).sim},
		{use: "watch", short: "watch an agent's southbound as a data-plane node does (JSON lines)", build: (*app).watch},
		{use: "seed --data DIR", short: "run a seed: admin API, validation, signed publishing, the OCI registry", long: seedLong, build: (*app).seed, sub: []command{
			{use: "key", short: "the seed's signing keys", sub: []command{
				{use: "create --out FILE.pub", short: "have a running seed make its next signing key; writes the public key (admin)", build: (*app).seedKeyCreate},
			}},
		}},
		{use: "agent --data DIR --root root.json --bootstrap MULTIADDR...", short: "run an agent: join a domain, verify, relay and keep bundles, serve the local data plane", build: (*app).agent, sub: []command{
			{use: "status", short: "show a running agent's status", build: (*app).agentStatus},
		}},
		{use: "ext", short: "Wasm extensions: push to a seed's registry and declare, or print a module's CID", sub: []command{
			{use: "push FILE --name N --abi A", short: "admit a Wasm extension locally, push it to a seed's OCI registry and declare it", build: (*app).extPush},
			{use: "cid FILE", short: "print the CID (and equal OCI digest) an Extension names for FILE", build: (*app).extCID},
		}},
		{use: "apply -f FILE_OR_DIR", short: "validate and store resources on a seed (--dry-run: show the diff)", build: (*app).apply},
		{use: "diff -f FILE_OR_DIR", short: "show what applying resources would change (exit 0: nothing, 1: changes, 2: error)", build: (*app).diff},
		{use: "get KIND [NAME]", short: "show resources stored on a seed", build: (*app).get},
		{use: "delete KIND NAME", short: "delete a resource on a seed", build: (*app).del},
		{use: "history", short: "list a seed's publications", build: (*app).history},
		{use: "status", short: "show a seed's publish state", build: (*app).status},
		{use: "audit", short: "list a seed's audit log", build: (*app).audit, sub: []command{
			{use: "verify", short: "verify the audit chain, of a running seed or a stopped seed's data", build: (*app).auditVerify},
		}},
		{use: "ca", short: "the domain CA", sub: []command{
			{use: "status --ca-dir DIR [--root root.json]", short: "list every expiry of the domain's trust; exit 1 when one is within --warn", build: (*app).caStatus},
			{use: "rotate --step prepare|activate|retire", short: "move the CA's rotation on by one step (admin)", build: (*app).caRotate},
		}},
		{use: "cert", short: "operators' client certificates for the admin API's mTLS", sub: []command{
			{use: "issue --name N --key-out KEY --cert-out PEM", short: "make a key here and have the domain CA issue its client certificate (admin)", build: (*app).certIssue},
		}},
		{use: "revoke --node N | --serial HEX | --peer ID", short: "refuse a node, a certificate or a peer across the domain (admin)", build: (*app).revoke},
		{use: "control", short: "the domain's control stream: root, trust bundle, revocations", sub: []command{
			{use: "status", short: "show a seed's control stream (JSON)", build: (*app).controlStatus},
		}},
		{use: "token", short: "join tokens that enrol agents with the domain CA", sub: []command{
			{use: "create --node NAME", short: "create a single-use join token for one node, printed once (admin)", build: (*app).tokenCreate},
		}},
		{use: "policy", short: "manage the principals of a seed's --policy file", sub: []command{
			{use: "add --name N --scope SCOPE --tenant T", short: "create a principal with a new bearer token, printed once", build: (*app).policyAdd},
		}},
		{use: "demo", short: "build, sign and verify the example bundle end to end", build: (*app).demo},
		{use: "version", short: "print the version", build: (*app).version},
	}
}

// rootCommand builds the command tree on cobra: help, flag parsing (flags may follow
// positional arguments; -o is --output), and `meshkit completion bash|zsh|fish`.
func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "meshkit",
		Short:         "MeshKit: edge-first control plane for OmniRelay",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.ArbitraryArgs,
		RunE:          groupRun,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err.Error()} })
	for _, c := range a.commands() {
		a.add(root, c)
	}
	return root
}

func (a *app) add(parent *cobra.Command, c command) {
	cmd := &cobra.Command{Use: c.use, Short: c.short, Long: c.long, Args: cobra.ArbitraryArgs, RunE: groupRun}
	if c.build != nil {
		run := c.build(a, cmd.Flags())
		cmd.RunE = func(_ *cobra.Command, args []string) error { return run(args) }
	}
	for _, s := range c.sub {
		a.add(cmd, s)
	}
	parent.AddCommand(cmd)
}

// groupRun runs a command that only groups others: an argument is an unknown command,
// none shows the help (exit 2, as nothing was done).
func groupRun(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command %q; commands: %s", args[0], strings.Join(names(cmd.Commands()), ", "))
	}
	cmd.SetOut(cmd.ErrOrStderr())
	_ = cmd.Help()
	return &exitError{code: exitUsage}
}

func names(cmds []*cobra.Command) []string {
	var out []string
	for _, c := range cmds {
		if c.IsAvailableCommand() {
			out = append(out, c.Name())
		}
	}
	return out
}

func (a *app) main(args []string) int {
	root := a.rootCommand()
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if cmd == nil {
		cmd = root
	}
	path := cmd.CommandPath()
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		if ee.err != nil {
			fmt.Fprintf(a.stderr, "%s: %v\n", path, ee.err)
		}
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(a.stderr, "%s: %v (see %s --help)\n", path, err, path)
		return exitUsage
	default:
		fmt.Fprintf(a.stderr, "%s: %v\n", path, err)
		return exitFail
	}
}

// outputFlag defines -o/--output for a command that prints text or JSON; check refuses
// any other value.
func outputFlag(fs *pflag.FlagSet) (output *string, check func() error) {
	output = fs.StringP("output", "o", "text", "output format: text or json")
	return output, func() error {
		if *output != "text" && *output != "json" {
			return usagef("--output must be one of text, json")
		}
		return nil
	}
}

// printJSONValue writes v as indented JSON.
func (a *app) printJSONValue(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// noArgs refuses positional arguments to a command that takes none.
func noArgs(args []string) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q: this command takes flags only", args[0])
	}
	return nil
}

// listFlag collects a repeatable flag; each use may also hold comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Type() string { return "strings" }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// parseDuration accepts Go durations and whole days ("30d").
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days <= 0 {
			return 0, fmt.Errorf("%q is not a duration (e.g. 12h, 30d)", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration (e.g. 12h, 30d)", s)
	}
	return d, nil
}

func required(name, value string) error {
	if value == "" {
		if name == "filename" {
			return usagef("-f/--filename is required")
		}
		return usagef("--%s is required", name)
	}
	return nil
}
