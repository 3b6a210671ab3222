package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"meshkit.dev/meshkit/examples"
)

// demo runs the whole trust round trip with the real commands in a scratch directory:
// keys → root → build → sign → verify, then shows three refusals (a tampered byte, a
// replay, an expired bundle).
func (a *app) demo(fsf *pflag.FlagSet) func(args []string) error {
	dir := fsf.String("dir", "", "scratch directory (default: a new temporary one)")
	keep := fsf.Bool("keep", false, "keep the scratch directory")
	return func(args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *dir == "" {
			d, err := os.MkdirTemp("", "meshkit-demo-")
			if err != nil {
				return err
			}
			*dir = d
			if !*keep {
				defer os.RemoveAll(d)
			}
		}
		res := filepath.Join(*dir, "resources")
		if err := copyFS(res, examples.Shop, "shop"); err != nil {
			return err
		}
		p := func(name string) string { return filepath.Join(*dir, name) }
		steps := []struct {
			title    string
			args     []string
			wantExit int
			expect   string // substring of the output the step must show
		}{
			{"generate a root key and a seed key", []string{"key", "gen", "--out", p("root.key")}, exitOK, ""},
			{"", []string{"key", "gen", "--out", p("seed.key")}, exitOK, ""},
			{"create the domain root, signed by the root key, delegating bundles to the seed key",
				[]string{"root", "init", "--domain", "prod", "--root-key", p("root.key"), "--threshold", "1", "--seed-key", p("seed.key.pub"), "--expires", "30d", "--out", p("root.json")}, exitOK, "fully signed"},
			{"build version 1 of the bundle from the example resources",
				[]string{"bundle", "build", "-f", res, "--domain", "prod", "--epoch", "1", "--version", "1", "--expires", "1h", "--out", p("v1.unsigned")}, exitOK, "version=1"},
			{"sign it with the seed key", []string{"bundle", "sign", "--key", p("seed.key"), "--in", p("v1.unsigned"), "--out", p("v1.bundle")}, exitOK, "signed"},
			{"verify it as an agent would, remembering what it accepted",
				[]string{"bundle", "verify", "--root", p("root.json"), "--state", p("agent-state.json"), p("v1.bundle")}, exitOK, "OK bundle"},
			{"tamper with one byte: refused",
				[]string{"bundle", "verify", "--root", p("root.json"), "--state", p("agent-state.json"), p("tampered.bundle")}, exitFail, "bad signature"},
			{"replay version 1 to the same agent: refused",
				[]string{"bundle", "verify", "--root", p("root.json"), "--state", p("agent-state.json"), p("v1.bundle")}, exitFail, "replay"},
			{"build and sign a bundle whose validity ended in 2020: refused",
				[]string{"bundle", "build", "-f", res, "--domain", "prod", "--version", "2", "--issued-at", "2020-01-01T00:00:00Z", "--expires", "1h", "--out", p("old.unsigned")}, exitOK, ""},
			{"", []string{"bundle", "sign", "--key", p("seed.key"), "--in", p("old.unsigned"), "--out", p("old.bundle")}, exitOK, ""},
			{"", []string{"bundle", "verify", "--root", p("root.json"), p("old.bundle")}, exitFail, "expired"},
		}
		for _, s := range steps {
			if s.title != "" {
				fmt.Fprintf(a.stdout, "\n# %s\n", s.title)
			}
			if strings.HasSuffix(s.args[len(s.args)-1], "tampered.bundle") {
				if err := tamper(p("v1.bundle"), p("tampered.bundle")); err != nil {
					return err
				}
			}
			fmt.Fprintf(a.stdout, "$ meshkit %s\n", strings.ReplaceAll(strings.Join(s.args, " "), *dir+string(filepath.Separator), ""))
			var out bytes.Buffer
			sub := &app{ctx: a.ctx, stdout: &out, stderr: &out, now: a.now}
			code := sub.main(s.args)
			fmt.Fprint(a.stdout, strings.ReplaceAll(out.String(), *dir+string(filepath.Separator), ""))
			if code != s.wantExit || !strings.Contains(out.String(), s.expect) {
				return fmt.Errorf("demo step %q exited %d (want %d) without %q", strings.Join(s.args, " "), code, s.wantExit, s.expect)
			}
			if code != exitOK {
				fmt.Fprintf(a.stdout, "(exit %d, as expected)\n", code)
			}
		}
		fmt.Fprintf(a.stdout, "\ndemo complete: the signed bundle verified, and tampering, replay and expiry were each refused\n")
		if *keep {
			fmt.Fprintf(a.stdout, "files kept in %s\n", *dir)
		}
		return nil
	}
}

// tamper copies src to dst with one byte of the payload flipped.
func tamper(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	data[len(data)/2] ^= 0x01
	return os.WriteFile(dst, data, 0o644)
}

func copyFS(dst string, fsys fs.FS, root string) error {
	return fs.WalkDir(fsys, root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(path, root))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}
