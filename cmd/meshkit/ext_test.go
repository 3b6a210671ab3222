package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/wasmfixture"
	"meshkit.dev/meshkit/node"
)

// TestDevExtensionPushAdmitServe is issue 7's "Done when" on `meshkit dev`: `meshkit ext
// push` publishes a module to the seed's OCI registry, `meshkit apply` binds it, and every
// agent fetches it (from peers first), admits it and serves it; a module that loops is
// refused by `ext push`, and when pushed anyway every agent rejects it and its
// fail-closed route refuses traffic.
func TestDevExtensionPushAdmitServe(t *testing.T) {
	out := startDev(t, 3)
	grpcAddr := regexp.MustCompile(`seed admin gRPC\s+(\S+)`).FindStringSubmatch(out.String())[1]
	httpAddr := regexp.MustCompile(`seed HTTP\s+(\S+)`).FindStringSubmatch(out.String())[1]
	statuses := regexp.MustCompile(`status (http://\S+/status)`).FindAllStringSubmatch(out.String(), -1)
	if len(statuses) != 3 {
		t.Fatalf("dev printed %d agents:\n%s", len(statuses), out.String())
	}

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid, loop := wasmfixture.Module(t, "valid"), wasmfixture.Module(t, "loop")
	validPath, loopPath := write("auth.wasm", valid), write("spin.wasm", loop)
	push := func(args ...string) (int, string) {
		return cli(t, append([]string{"ext", "push"}, append(args, "--namespace", "shop", "--tenant", "acme", "--abi", "proxy-wasm/0.2.1", "--registry", httpAddr, "--seed", grpcAddr)...)...)
	}
	if code, msg := cli(t, "ext", "cid", validPath); code != exitOK || !strings.HasPrefix(msg, content.Sum(valid).String()+"\tsha256:") {
		t.Fatalf("ext cid: %d %q", code, msg)
	}
	code, msg := push(validPath, "--name", "auth")
	if code != exitOK || !strings.Contains(msg, content.Sum(valid).String()) {
		t.Fatalf("ext push: %d %s", code, msg)
	}
	if code, msg := push(loopPath, "--name", "spin"); code == exitOK || !strings.Contains(msg, "start_timeout") {
		t.Fatalf("ext push of a looping module: %d %s", code, msg)
	}
	// --skip-admission skips only the local check: the seed admits the module itself
	// before it accepts the Extension, and refuses it with the reason.
	if code, msg := push(loopPath, "--name", "spin", "--skip-admission"); code != exitFail ||
		!strings.Contains(msg, "would be refused by every agent") || !strings.Contains(msg, "start_timeout") {
		t.Fatalf("ext push --skip-admission of a looping module: %d %s", code, msg)
	}
	bindings := write("bindings.yaml", []byte(`apiVersion: meshkit.dev/v1alpha1
kind: ExtensionBinding
metadata: {name: auth-storefront, namespace: shop, tenant: acme}
spec: {extension: auth, routes: [storefront]}
`))
	if code, msg := cli(t, "apply", "-f", bindings, "--seed", grpcAddr); code != exitOK {
		t.Fatalf("apply: %s", msg)
	}

	// Every agent admits auth and serves its bytes to its data plane.
	for _, st := range statuses {
		url := st[1]
		var got node.Status
		deadline := time.Now().Add(60 * time.Second)
		for {
			got = fetchStatus(t, url)
			states := map[string]string{}
			for _, e := range got.Extensions {
				states[e.Artifact] = e.State
			}
			if states[content.Sum(valid).String()] == node.ExtAdmitted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: extensions %+v", url, got.Extensions)
			}
			time.Sleep(100 * time.Millisecond)
		}
		resp, err := http.Get(strings.TrimSuffix(url, "/status") + "/artifacts/" + content.Sum(valid).String())
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != string(valid) {
			t.Fatalf("%s serves the module: %d", url, resp.StatusCode)
		}
	}
	// The seed sums the agents' verdicts in `meshkit status` (node tests cover rejections).
	want := "extension " + content.Sum(valid).String() + " (proxy-wasm/0.2.1): admitted by 3, rejected by 0"
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, msg := cli(t, "status", "--seed", grpcAddr)
		if code == exitOK && strings.Contains(msg, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status does not show the rejections (%q):\n%s", want, msg)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The registry kept the artifact under its tag: an OCI client resolves it.
	resp, err := http.Get("http://" + httpAddr + "/v2/acme/shop/auth/manifests/latest")
	if err != nil {
		t.Fatal(err)
	}
	manifest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(manifest), "application/vnd.meshkit.extension.v1") {
		t.Fatalf("manifest: %d %s", resp.StatusCode, manifest)
	}
}

func fetchStatus(t *testing.T, url string) node.Status {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st node.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
