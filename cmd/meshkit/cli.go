package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
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

// command is one subcommand: name, one-line summary, and its function.
type command struct {
	name, summary string
	run           func(a *app, args []string) error
	sub           []command
}

// usageError marks an error of the command line (exit 2) rather than of the operation.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{ctx: context.Background(), stdout: stdout, stderr: stderr, now: time.Now}
	return a.main(args)
}

func (a *app) commands() []command {
	return []command{
		{name: "key", summary: "generate signing keys", sub: []command{
			{name: "gen", summary: "generate an Ed25519 key pair", run: (*app).keyGen},
		}},
		{name: "root", summary: "create, rotate, sign and verify domain roots", sub: []command{
			{name: "init", summary: "create and sign version 1 of a domain root", run: (*app).rootInit},
			{name: "rotate", summary: "create the next version of a domain root", run: (*app).rootRotate},
			{name: "sign", summary: "add a signature to a root (multi-party signing)", run: (*app).rootSign},
			{name: "verify", summary: "verify a root and its rotations", run: (*app).rootVerify},
		}},
		{name: "bundle", summary: "build, sign, verify, inspect and diff bundles", sub: []command{
			{name: "build", summary: "build an unsigned bundle from YAML resources", run: (*app).bundleBuild},
			{name: "sign", summary: "sign a bundle", run: (*app).bundleSign},
			{name: "verify", summary: "verify a signed bundle against a root", run: (*app).bundleVerify},
			{name: "inspect", summary: "show a bundle", run: (*app).bundleInspect},
			{name: "diff", summary: "show what changed between two bundles", run: (*app).bundleDiff},
			{name: "fetch", summary: "fetch the newest signed bundle from a seed", run: (*app).bundleFetch},
		}},
		{name: "dev", summary: "run a whole domain on loopback: a seed with the examples and N agents serving OmniRelay's watch", run: (*app).dev},
		{name: "sim", summary: "simulate a domain (partitions, churn, attacks) over in-memory links; --baseline xds compares a hub", run: (*app).sim},
		{name: "watch", summary: "watch an agent's southbound as a data-plane node does (JSON lines)", run: (*app).watch},
		{name: "seed", summary: "run a seed: admin API, validation, signed publishing", run: (*app).seed},
		{name: "agent", summary: "run an agent, or 'agent status': join a domain, verify, relay and keep bundles", run: (*app).agent},
		{name: "ext", summary: "'ext push FILE': admit a Wasm extension, push it to a seed's OCI registry and declare it", run: (*app).ext},
		{name: "apply", summary: "validate and store resources on a seed (--dry-run: show the diff)", run: (*app).apply},
		{name: "diff", summary: "show what applying resources would change", run: (*app).diff},
		{name: "get", summary: "show resources stored on a seed", run: (*app).get},
		{name: "delete", summary: "delete a resource on a seed", run: (*app).del},
		{name: "history", summary: "list a seed's publications", run: (*app).history},
		{name: "status", summary: "show a seed's publish state", run: (*app).status},
		{name: "audit", summary: "list the audit log, or 'audit verify' the chain", run: (*app).audit},
		{name: "demo", summary: "build, sign and verify the example bundle end to end", run: (*app).demo},
		{name: "version", summary: "print the version", run: (*app).version},
	}
}

func (a *app) main(args []string) int {
	cmds := a.commands()
	path := []string{"meshkit"}
	for {
		if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			a.printUsage(strings.Join(path, " "), cmds)
			if len(args) == 0 {
				return exitUsage
			}
			return exitOK
		}
		i := slices.IndexFunc(cmds, func(c command) bool { return c.name == args[0] })
		if i < 0 {
			fmt.Fprintf(a.stderr, "%s: unknown command %q\n", strings.Join(path, " "), args[0])
			a.printUsage(strings.Join(path, " "), cmds)
			return exitUsage
		}
		c := cmds[i]
		path, args = append(path, c.name), args[1:]
		if c.sub != nil {
			cmds = c.sub
			continue
		}
		err := c.run(a, args)
		var ue *usageError
		switch {
		case err == nil:
			return exitOK
		case errors.Is(err, flag.ErrHelp):
			return exitOK
		case errors.As(err, &ue):
			fmt.Fprintf(a.stderr, "%s: %v (see %s --help)\n", strings.Join(path, " "), err, strings.Join(path, " "))
			return exitUsage
		default:
			fmt.Fprintf(a.stderr, "%s: %v\n", strings.Join(path, " "), err)
			return exitFail
		}
	}
}

func (a *app) printUsage(path string, cmds []command) {
	fmt.Fprintf(a.stderr, "Usage: %s COMMAND [flags]\n\nCommands:\n", path)
	for _, c := range cmds {
		fmt.Fprintf(a.stderr, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(a.stderr, "\nRun '%s COMMAND --help' for a command's flags.\n", path)
}

// newFlags returns a flag set that prints its usage to a.stderr.
func (a *app) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.Usage = func() {
		fmt.Fprintf(a.stderr, "Usage: meshkit %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags that may come before or after positional arguments and returns the
// positionals. Flag errors become usage errors; --help returns flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// listFlag collects a repeatable flag; each use may also hold comma-separated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

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
		dash := "--"
		if len(name) == 1 {
			dash = "-"
		}
		return usagef("%s%s is required", dash, name)
	}
	return nil
}
