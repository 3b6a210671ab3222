package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/pflag"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"

	"meshkit.dev/meshkit/content"
	adminv1 "meshkit.dev/meshkit/proto/meshkit/admin/v1"
	bundlev1 "meshkit.dev/meshkit/proto/meshkit/bundle/v1"
	"meshkit.dev/meshkit/seed"
	"meshkit.dev/meshkit/wasm"
)

// Media types of an extension pushed as an OCI artifact (the Wasm layer type is the one
// the Wasm OCI artifact layout uses).
const (
	extArtifactType = "application/vnd.meshkit.extension.v1"
	wasmLayerType   = "application/vnd.module.wasm.content.layer.v1+wasm"
)

// extCID prints the CID (and the equal OCI digest) an Extension must name for FILE.
func (a *app) extCID(fs *pflag.FlagSet) func(args []string) error {
	output, checkOutput := outputFlag(fs)
	return func(args []string) error {
		if err := checkOutput(); err != nil {
			return err
		}
		pos := args
		if len(pos) != 1 {
			return usagef("ext cid takes one FILE")
		}
		b, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		c := content.Sum(b)
		d, err := content.Digest(c)
		if err != nil {
			return err
		}
		if *output == "json" {
			return a.printJSONValue(map[string]any{"cid": c.String(), "digest": d.String(), "size": len(b)})
		}
		fmt.Fprintf(a.stdout, "%s\t%s\t%d bytes\n", c, d, len(b))
		return nil
	}
}

// extPush admits the module locally, pushes it to the seed's OCI registry (the layer's
// digest is its CID), and applies the Extension resource that declares it: one step.
func (a *app) extPush(fs *pflag.FlagSet) func(args []string) error {
	name := fs.String("name", "", "Extension resource name (and registry repository NAMESPACE/NAME)")
	ns := fs.String("namespace", "default", "namespace of the Extension resource")
	tenant := fs.String("tenant", "", "tenant the Extension resource belongs to (bindings of another tenant need its ReferenceGrant)")
	abi := fs.String("abi", "", "ABI the module implements: proxy-wasm/0.2.1, proxy-wasm/0.2.0, dsl/v1")
	kind := fs.String("kind", "wasm", "wasm, dsl or native")
	policy := fs.String("failure-policy", "fail-closed", "what nodes do when the module cannot run: fail-closed (its routes refuse traffic) or fail-open (it is dropped)")
	tag := fs.String("tag", "latest", "registry tag")
	var rollout listFlag
	fs.Var(&rollout, "rollout-tag", "rollout tag (repeatable)")
	registryAddr := fs.String("registry", cmpOr(os.Getenv("MESHKIT_REGISTRY"), "127.0.0.1:17480"), "the seed's HTTP address, which serves the OCI registry on /v2/ (env MESHKIT_REGISTRY)")
	skipAdmit := fs.Bool("skip-admission", false, "skip the local admission before the push (the seed still admits the module before it accepts the Extension)")
	var c clientFlags
	c.register(fs, "text, json")
	return func(args []string) error {
		pos := args
		s, err := c.open("text", "json")
		if err != nil {
			return err
		}
		defer s.close()
		if len(pos) != 1 {
			return usagef("ext push takes one FILE")
		}
		if err := required("name", *name); err != nil {
			return err
		}
		if err := required("abi", *abi); err != nil {
			return err
		}
		kinds := map[string]bundlev1.ExtensionKind{"wasm": bundlev1.ExtensionKind_EXTENSION_KIND_WASM, "dsl": bundlev1.ExtensionKind_EXTENSION_KIND_DSL, "native": bundlev1.ExtensionKind_EXTENSION_KIND_NATIVE}
		policies := map[string]bundlev1.FailurePolicy{"fail-closed": bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_CLOSED, "fail-open": bundlev1.FailurePolicy_FAILURE_POLICY_FAIL_OPEN}
		k, ok := kinds[*kind]
		if !ok {
			return usagef("--kind must be wasm, dsl or native")
		}
		fp, ok := policies[*policy]
		if !ok {
			return usagef("--failure-policy must be fail-closed or fail-open")
		}
		module, err := os.ReadFile(pos[0])
		if err != nil {
			return err
		}
		if k == bundlev1.ExtensionKind_EXTENSION_KIND_WASM && !*skipAdmit {
			if v := wasm.NewAdmitter(wasm.Config{}).Admit(s.ctx, wasm.Request{ABI: *abi, Module: module}); !v.Accepted {
				return fmt.Errorf("%s would be rejected by every agent, and by the seed: %w", pos[0], v.Err())
			}
		}
		cid := content.Sum(module)
		token, err := c.token()
		if err != nil {
			return err
		}
		repo := cmpOr(*tenant, seed.NoTenantRepository) + "/" + *ns + "/" + *name // the first component is the tenant (seed.RepositoryTenant)
		desc, err := a.orasPush(s.ctx, &c, *registryAddr, repo, *tag, token, filepath.Base(pos[0]), module)
		if err != nil {
			return fmt.Errorf("push to %s: %w", *registryAddr, err)
		}
		res := &adminv1.Resource{
			Metadata: &bundlev1.Metadata{Name: *name, Namespace: *ns, Tenant: *tenant},
			Spec: &adminv1.Resource_Extension{Extension: &bundlev1.ExtensionSpec{
				Kind: k, Artifact: cid.String(), Abi: *abi, MediaType: wasmLayerType, Size: uint64(len(module)),
				FailurePolicy: fp, RolloutTags: rollout,
			}},
		}
		resp, err := s.Apply(s.ctx, &adminv1.ApplyRequest{Resources: []*adminv1.Resource{res}})
		if err != nil {
			return rpcError(err)
		}
		if c.output == "json" {
			return a.printJSON(resp)
		}
		fmt.Fprintf(a.stdout, "pushed %s (%d bytes) to %s/%s:%s as %s (manifest %s)\n", pos[0], len(module), *registryAddr, repo, *tag, cid, desc.Digest)
		a.printChanges(resp.GetChanges())
		return nil
	}
}

// orasPush pushes module as a one-layer OCI artifact and tags its manifest.
// The layer carries its file name as its title, so `oras pull` writes it back as a file.
func (a *app) orasPush(ctx context.Context, c *clientFlags, addr, repoName, tag, token, fileName string, module []byte) (ocispec.Descriptor, error) {
	repo, err := remote.NewRepository(addr + "/" + repoName)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := c.checkPlaintext(addr, token, c.ca != ""); err != nil {
		return ocispec.Descriptor{}, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.ca != "" {
		if tr.TLSClientConfig, err = c.tlsConfig(); err != nil {
			return ocispec.Descriptor{}, err
		}
	} else {
		repo.PlainHTTP = true
	}
	client := &auth.Client{Client: &http.Client{Transport: tr}}
	if token != "" {
		// The seed challenges with Basic: the token is the password, the user name is free.
		client.Credential = auth.StaticCredential(repo.Reference.Registry, auth.Credential{Username: "meshkit", Password: token})
	}
	repo.Client = client
	layer, err := oras.PushBytes(ctx, repo, wasmLayerType, module)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: fileName}
	manifest, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, extArtifactType, oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := repo.Tag(ctx, manifest, tag); err != nil {
		return ocispec.Descriptor{}, err
	}
	return manifest, nil
}
