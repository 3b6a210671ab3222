package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

// maxManifestBytes is distribution's own limit on a manifest body (handlers/manifests.go).
const maxManifestBytes = 4 << 20

type routeKind int

const (
	routeOther routeKind = iota
	routeManifest
	routeUpload
	routeReferrers
)

// route is what MeshKit's additions need of a request path: the repository and what
// follows its marker. Distribution's router validates names and references itself.
type route struct {
	kind routeKind
	name string
	rest string // the reference, the upload id or the subject digest
}

func parseRoute(p string) route {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}
	}
	for _, m := range []struct {
		marker string
		kind   routeKind
	}{{"/blobs/uploads/", routeUpload}, {"/manifests/", routeManifest}, {"/referrers/", routeReferrers}} {
		if i := strings.LastIndex(rest, m.marker); i > 0 {
			tail := rest[i+len(m.marker):]
			if m.kind != routeUpload && (tail == "" || strings.Contains(tail, "/")) {
				continue
			}
			return route{kind: m.kind, name: rest[:i], rest: tail}
		}
	}
	return route{}
}

// unsupportedDigest refuses, with the spec's DIGEST_INVALID, a request that names a digest
// of an algorithm other than sha256, in its path or its digest or mount parameter. The
// content store, the CIDs agents fetch by and distribution's own manifest store are
// sha256 only: accepting sha512 content would store what could be neither fetched by
// agents nor read back under its own digest.
func unsupportedDigest(req *http.Request, rt route) string {
	check := func(s string) string {
		alg, _, ok := strings.Cut(s, ":")
		if !ok || digest.Algorithm(alg) == digest.SHA256 {
			return ""
		}
		return fmt.Sprintf("digest algorithm %q is not supported: this registry stores sha256 content only", alg)
	}
	var candidates []string
	switch rt.kind {
	case routeManifest, routeReferrers:
		candidates = append(candidates, rt.rest)
	case routeOther:
		if i := strings.LastIndex(req.URL.Path, "/blobs/"); i > 0 {
			candidates = append(candidates, req.URL.Path[i+len("/blobs/"):])
		}
	}
	q := req.URL.Query()
	candidates = append(candidates, q.Get("digest"), q.Get("mount"))
	for _, c := range candidates {
		if msg := check(c); msg != "" {
			return msg
		}
	}
	return ""
}

// postUpload serves a single-POST upload (POST ?digest= with the blob as its body, which
// distribution answers 202 and ignores) as the POST and PUT pair distribution does serve,
// so clients that push monolithically in one request are answered 201 at once.
func (r *Registry) postUpload(w http.ResponseWriter, req *http.Request, rt route) {
	start := req.Clone(req.Context())
	start.Body, start.ContentLength = http.NoBody, 0
	start.Header.Del("Content-Type")
	start.Header.Del("Content-Length")
	q := start.URL.Query()
	dgst := q.Get("digest")
	q.Del("digest")
	start.URL.RawQuery = q.Encode()
	rec := &headerRecorder{header: http.Header{}}
	r.app.ServeHTTP(rec, start)
	loc := rec.header.Get("Location")
	if rec.status != http.StatusAccepted || loc == "" {
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body.Bytes())
		return
	}
	u, err := req.URL.Parse(loc)
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	uq := u.Query()
	uq.Set("digest", dgst)
	u.RawQuery = uq.Encode()
	put := req.Clone(req.Context())
	put.Method = http.MethodPut
	put.URL = u
	put.RequestURI = u.RequestURI()
	r.guardUpload(w, put, parseRoute(u.Path))
}

// headerRecorder keeps a response in memory (a small one: an upload's start).
type headerRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}

func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	if h.body.Len()+len(b) > 64<<10 {
		return 0, errors.New("registry: response too large to record")
	}
	return h.body.Write(b)
}

// ociError answers with the distribution API's error format.
func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// putManifest passes a manifest PUT to distribution and, when the manifest names a
// subject and is stored, answers with the OCI-Subject header that tells clients this
// registry indexes referrers (distribution-spec: "Pushing Manifests with Subject").
// Distribution acknowledges the PUT only after the manifest's bytes and links are on
// disk and synced (the content store and the filesystem driver both fsync).
func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, maxManifestBytes+1))
	if err != nil || len(body) > maxManifestBytes {
		ociError(w, http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", fmt.Sprintf("a manifest may hold at most %d bytes", maxManifestBytes))
		return
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	var m struct {
		Subject *struct {
			Digest digest.Digest `json:"digest"`
		} `json:"subject"`
	}
	sw := &subjectWriter{ResponseWriter: w}
	if json.Unmarshal(body, &m) == nil && m.Subject != nil && m.Subject.Digest.Validate() == nil {
		sw.subject = m.Subject.Digest.String()
	}
	r.app.ServeHTTP(sw, req)
}

type subjectWriter struct {
	http.ResponseWriter
	subject string
}

func (s *subjectWriter) WriteHeader(code int) {
	if code == http.StatusCreated && s.subject != "" {
		s.Header().Set("OCI-Subject", s.subject)
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *subjectWriter) Write(b []byte) (int, error) { return s.ResponseWriter.Write(b) }

func (s *subjectWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// guardUpload bounds what an upload request may add: one upload at most MaxUploadBytes,
// every upload in progress together at most MaxPendingBytes. A declared length over the
// allowance is refused before a byte is read; a streamed body is cut at the allowance and
// the request answered 413 whatever distribution would have said about the short read.
func (r *Registry) guardUpload(w http.ResponseWriter, req *http.Request, rt route) {
	var have int64
	if id := strings.TrimSuffix(rt.rest, "/"); id != "" && !strings.Contains(id, "/") {
		have = r.driver.uploadBytes(reposPrefix + rt.name + uploadsDir + id)
	}
	perUpload := r.cfg.MaxUploadBytes - have
	blobTooLarge := fmt.Sprintf("a blob may hold at most %d bytes; this upload holds %d", r.cfg.MaxUploadBytes, have)
	declared := req.ContentLength // -1: streamed
	if cr := req.Header.Get("Content-Range"); cr != "" {
		if s, e, ok := strings.Cut(cr, "-"); ok {
			start, err1 := strconv.ParseInt(s, 10, 64)
			end, err2 := strconv.ParseInt(e, 10, 64)
			if err1 == nil && err2 == nil && end >= start {
				declared = max(declared, end-start+1)
			}
		}
	}
	if perUpload < 0 || declared > perUpload {
		ociError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", blobTooLarge)
		return
	}
	if req.Body == nil || req.Body == http.NoBody || declared == 0 {
		r.app.ServeHTTP(w, req)
		return
	}
	// The allowance is reserved against the total for the request's life, so concurrent
	// uploads cannot together pass it; a streamed body reserves what its upload may add.
	want := perUpload
	if declared > 0 {
		want = declared
	}
	granted := r.driver.reserve(want, r.cfg.MaxPendingBytes)
	defer r.driver.release(granted)
	totalTooLarge := fmt.Sprintf("uploads in progress hold %d of the %d bytes the registry allows; retry when they finish or expire",
		r.driver.pendingBytes(), r.cfg.MaxPendingBytes)
	if granted < want && (declared > 0 || granted == 0) {
		ociError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", totalTooLarge)
		return
	}
	msg := blobTooLarge
	if granted < perUpload {
		msg = totalTooLarge
	}
	lr := &limitedBody{r: req.Body, left: granted}
	req.Body = lr
	r.app.ServeHTTP(&guardWriter{ResponseWriter: w, body: lr, msg: msg}, req)
}

var errOverAllowance = errors.New("registry: upload over its allowance")

type limitedBody struct {
	r    io.ReadCloser
	left int64
	over bool
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a body that ends exactly at the allowance from one that
		// goes on.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, errOverAllowance
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedBody) Close() error { return l.r.Close() }

// guardWriter replaces distribution's answer with 413 when the body was cut.
type guardWriter struct {
	http.ResponseWriter
	body     *limitedBody
	msg      string
	replaced bool
}

func (g *guardWriter) WriteHeader(code int) {
	if g.body.over {
		g.replaced = true
		for k := range g.Header() {
			g.Header().Del(k)
		}
		ociError(g.ResponseWriter, http.StatusRequestEntityTooLarge, "SIZE_INVALID", g.msg)
		return
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *guardWriter) Write(b []byte) (int, error) {
	if g.replaced {
		return len(b), nil
	}
	return g.ResponseWriter.Write(b)
}

func (g *guardWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
