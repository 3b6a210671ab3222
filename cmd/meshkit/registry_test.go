package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/file"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/wasmfixture"
)

// TestExtPushAndPullThroughTheChallengeAgainstAProductionSeed: against a seed with RBAC on
// (not --dev), `meshkit ext push` authenticates through the registry's challenge, and an
// OCI client given the token as a password (as `oras pull -u any -p TOKEN` is) pulls the
// artifact through the same challenge and writes the module under its file name. A wrong
// password is refused.
func TestExtPushAndPullThroughTheChallengeAgainstAProductionSeed(t *testing.T) {
	grpcAddr, httpAddr, tokenFile, token := productionSeed(t)
	module := wasmfixture.Module(t, "valid")
	src := filepath.Join(t.TempDir(), "auth-filter.wasm")
	if err := os.WriteFile(src, module, 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustCLI(t, "ext", "push", src, "--name", "auth", "--namespace", "shop", "--tenant", "acme", "--abi", "proxy-wasm/0.2.1",
		"--registry", httpAddr, "--seed", grpcAddr, "--token-file", tokenFile)
	if !strings.Contains(out, content.Sum(module).String()) {
		t.Fatalf("ext push: %s", out)
	}

	pull := func(password string) (string, error) {
		repo, err := remote.NewRepository(httpAddr + "/acme/shop/auth")
		if err != nil {
			t.Fatal(err)
		}
		repo.PlainHTTP = true
		repo.Client = &auth.Client{Credential: auth.StaticCredential(httpAddr, auth.Credential{Username: "anyone", Password: password})}
		dir := t.TempDir()
		fs, err := file.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer fs.Close()
		_, err = oras.Copy(context.Background(), repo, "latest", fs, "latest", oras.DefaultCopyOptions)
		return dir, err
	}
	dir, err := pull(token)
	if err != nil {
		t.Fatalf("pull with the token as the password: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "auth-filter.wasm"))
	if err != nil || !bytes.Equal(got, module) {
		t.Fatalf("the pulled module under its file name: %v (%d bytes)", err, len(got))
	}
	if _, err := pull("not-the-token"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("pull with a wrong password: %v", err)
	}
}

// orasCLI builds the oras CLI pinned in internal/tools and returns a runner that keeps its
// credentials in a file of the test's own and runs in dir (files to push are named
// relative to it).
func orasCLI(t *testing.T) func(dir string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("go", "tool", "-modfile=../../internal/tools/go.mod", "-n", "oras").Output()
	if err != nil {
		t.Fatalf("building oras: %v", err)
	}
	bin, config := strings.TrimSpace(string(out)), filepath.Join(t.TempDir(), "config.json")
	return func(dir string, args ...string) (string, error) {
		cmd := exec.Command(bin, append(args, "--registry-config", config, "--plain-http")...)
		cmd.Dir = dir
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
}

// TestOrasCLIAgainstAProductionSeed: the oras CLI, against a seed with RBAC on, pushes
// with -u/-p, refuses a login with a wrong password, logs in, and after `oras login` pulls
// both its own artifact and one that `meshkit ext push` made, each written under its file
// name.
func TestOrasCLIAgainstAProductionSeed(t *testing.T) {
	grpcAddr, httpAddr, tokenFile, token := productionSeed(t)
	oras := orasCLI(t)
	module := wasmfixture.Module(t, "valid")
	work := t.TempDir()
	if err := os.WriteFile(filepath.Join(work, "filter.wasm"), module, 0o600); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, "ext", "push", filepath.Join(work, "filter.wasm"), "--name", "made-by-meshkit", "--namespace", "shop", "--tenant", "acme",
		"--abi", "proxy-wasm/0.2.1", "--registry", httpAddr, "--seed", grpcAddr, "--token-file", tokenFile)

	if out, err := oras(work, "push", httpAddr+"/acme/shop/by-oras:v1", "-u", "anyone", "-p", token,
		"filter.wasm:application/vnd.module.wasm.content.layer.v1+wasm"); err != nil {
		t.Fatalf("oras push -u/-p: %v\n%s", err, out)
	}
	if out, err := oras(work, "login", httpAddr, "-u", "anyone", "-p", "not-the-token"); err == nil {
		t.Fatalf("oras login with a wrong password succeeded:\n%s", out)
	}
	if out, err := oras(work, "login", httpAddr, "-u", "anyone", "-p", token); err != nil || !strings.Contains(out, "Login Succeeded") {
		t.Fatalf("oras login: %v\n%s", err, out)
	}
	for _, ref := range []string{"acme/shop/by-oras:v1", "acme/shop/made-by-meshkit:latest"} {
		dir := t.TempDir()
		if out, err := oras(dir, "pull", httpAddr+"/"+ref); err != nil {
			t.Fatalf("oras pull %s after login: %v\n%s", ref, err, out)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "filter.wasm")); err != nil || !bytes.Equal(got, module) {
			t.Fatalf("oras pull %s wrote no filter.wasm: %v", ref, err)
		}
	}
}

// productionSeed runs `meshkit seed` with RBAC on (not --dev) and returns its addresses,
// the admin token file it wrote, and the token.
func productionSeed(t *testing.T) (grpcAddr, httpAddr, tokenFile, token string) {
	t.Helper()
	data := t.TempDir()
	grpcAddr, httpAddr = startSeedAddrs(t, data)
	tokenFile = filepath.Join(data, "admin.token")
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return grpcAddr, httpAddr, tokenFile, strings.TrimSpace(string(tok))
}
