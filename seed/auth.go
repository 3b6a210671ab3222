package seed

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Scope is what a principal may do. Each scope includes the ones below it.
type Scope int

// Scopes, from least to most.
const (
	ScopeNone    Scope = iota
	ScopeRead          // mesh.read: get, list, diff, history, status
	ScopeOperate       // mesh.operate: apply, delete
	ScopeAdmin         // mesh.admin: audit
)

var scopeNames = map[string]Scope{"mesh.read": ScopeRead, "mesh.operate": ScopeOperate, "mesh.admin": ScopeAdmin}

func (s Scope) String() string {
	for n, v := range scopeNames {
		if v == s {
			return n
		}
	}
	return "none"
}

// Principal is an authenticated caller.
type Principal struct {
	Name  string
	Scope Scope
	// Tenants the principal may touch; "*" means all, including resources without a tenant.
	Tenants []string
}

// allows reports whether p may touch resources of tenant.
func (p *Principal) allows(tenant string) bool {
	return slices.Contains(p.Tenants, "*") || (tenant != "" && slices.Contains(p.Tenants, tenant))
}

// allTenants reports whether p may see every tenant's resources.
func (p *Principal) allTenants() bool { return slices.Contains(p.Tenants, "*") }

type principalKey struct{}

// WithPrincipal returns ctx carrying p, as the gRPC and REST front ends do.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

func principalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// authorize returns the caller if it holds at least scope.
func authorize(ctx context.Context, need Scope) (*Principal, error) {
	p := principalFrom(ctx)
	if p == nil {
		return nil, refuse(ErrUnauthenticated, "authentication required: send 'authorization: Bearer TOKEN' or a client certificate")
	}
	if p.Scope < need {
		return nil, refuse(ErrForbidden, "%s has %s; this needs %s", p.Name, p.Scope, need)
	}
	return p, nil
}

// authorizeAll is authorize for what holds every tenant's data: the caller needs need and
// all tenants ("*"); why says what the call reveals.
func authorizeAll(ctx context.Context, need Scope, why string) (*Principal, error) {
	p, err := authorize(ctx, need)
	if err != nil {
		return nil, err
	}
	if !p.allTenants() {
		return nil, refuse(ErrForbidden, "%s may read tenants %v only, and %s: this needs tenants [\"*\"]", p.Name, p.Tenants, why)
	}
	return p, nil
}

// Policy maps credentials to principals. It is loaded from YAML:
//
//	principals:
//	  - name: ci
//	    tokenSHA256: 9f86d0…      # hex SHA-256 of the bearer token; the token itself is never stored
//	    scopes: [mesh.operate]
//	    tenants: [acme]
//	  - name: platform-admin
//	    subject: spiffe://prod.example/ops/admin   # client certificate URI SAN or common name
//	    scopes: [mesh.admin]
//	    tenants: ["*"]
//
// A running seed's policy can be replaced whole (Reload) while requests are served.
type Policy struct {
	Principals []PolicyEntry `yaml:"principals"`
	// AllowAnonymous grants anonymous callers admin on every tenant: embedded dev mode only.
	AllowAnonymous bool `yaml:"-"`

	mu sync.RWMutex // guards Principals once the policy serves
}

// Reload replaces the principals with next's. next has been checked (LoadPolicy); the
// credentials it drops stop working with the next request.
func (p *Policy) Reload(next *Policy) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Principals = slices.Clone(next.Principals)
}

// Len is the number of principals.
func (p *Policy) Len() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.Principals)
}

// PolicyEntry is one principal of a Policy.
type PolicyEntry struct {
	Name        string   `yaml:"name"`
	TokenSHA256 string   `yaml:"tokenSHA256,omitempty"`
	Subject     string   `yaml:"subject,omitempty"`
	Scopes      []string `yaml:"scopes"`
	Tenants     []string `yaml:"tenants"`
}

// LoadPolicy reads and checks a policy file.
func LoadPolicy(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seed: policy: %w", err)
	}
	var p Policy
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("seed: policy %s: %w", path, err)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("seed: policy %s: %w", path, err)
	}
	return &p, nil
}

// Check reports every problem of the policy's principals.
func (p *Policy) Check() error { return p.validate() }

func (p *Policy) validate() error {
	var errs []error
	for i, e := range p.Principals {
		if e.Name == "" {
			errs = append(errs, fmt.Errorf("principals[%d]: name is required", i))
		}
		if (e.TokenSHA256 == "") == (e.Subject == "") {
			errs = append(errs, fmt.Errorf("principal %q: set exactly one of tokenSHA256 and subject", e.Name))
		}
		if e.TokenSHA256 != "" {
			if b, err := hex.DecodeString(e.TokenSHA256); err != nil || len(b) != sha256.Size {
				errs = append(errs, fmt.Errorf("principal %q: tokenSHA256 must be 64 hex characters", e.Name))
			}
		}
		for _, s := range e.Scopes {
			if _, ok := scopeNames[s]; !ok {
				errs = append(errs, fmt.Errorf("principal %q: unknown scope %q (mesh.read, mesh.operate, mesh.admin)", e.Name, s))
			}
		}
		if len(e.Scopes) == 0 || len(e.Tenants) == 0 {
			errs = append(errs, fmt.Errorf("principal %q: scopes and tenants are required", e.Name))
		}
	}
	return errors.Join(errs...)
}

func (e PolicyEntry) principal() *Principal {
	p := &Principal{Name: e.Name, Tenants: e.Tenants}
	for _, s := range e.Scopes {
		p.Scope = max(p.Scope, scopeNames[s])
	}
	return p
}

// subjectMatches reports whether a policy subject names cert. A subject with a scheme
// ("spiffe://…") is a URI and matches a URI SAN only; any other subject is a name and
// matches the CommonName only. Otherwise a certificate whose CommonName is spelled like
// another principal's SPIFFE ID would pass as that principal.
func subjectMatches(subject string, cert *x509.Certificate) bool {
	if strings.Contains(subject, "://") {
		return slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == subject })
	}
	return cert.Subject.CommonName == subject
}

// HashToken returns the hex SHA-256 a policy stores for a bearer token.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authenticate maps a bearer token (may be empty) and a verified client certificate
// (may be nil) to a principal. A presented but unknown credential is refused even in dev
// mode, so a typo never silently falls back to anonymous.
func (p *Policy) Authenticate(token string, cert *x509.Certificate) (*Principal, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if token != "" {
		sum, _ := hex.DecodeString(HashToken(token))
		for _, e := range p.Principals {
			want, err := hex.DecodeString(e.TokenSHA256)
			if err == nil && len(want) == sha256.Size && subtle.ConstantTimeCompare(sum, want) == 1 {
				return e.principal(), nil
			}
		}
		return nil, refuse(ErrUnauthenticated, "unknown bearer token")
	}
	if cert != nil {
		for _, e := range p.Principals {
			if e.Subject != "" && subjectMatches(e.Subject, cert) {
				return e.principal(), nil
			}
		}
		return nil, refuse(ErrForbidden, "client certificate %q is not in the policy", cert.Subject.CommonName)
	}
	if p.AllowAnonymous {
		return &Principal{Name: "anonymous (dev mode)", Scope: ScopeAdmin, Tenants: []string{"*"}}, nil
	}
	return nil, refuse(ErrUnauthenticated, "authentication required: send 'authorization: Bearer TOKEN' or a client certificate")
}
