package registry

import (
	"bufio"
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"testing"

	"meshkit.dev/meshkit/content"
	"meshkit.dev/meshkit/internal/fuzzcorpus"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpora in testdata/fuzz")

func requestCorpus() [][]byte {
	const d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	return [][]byte{
		[]byte("POST /v2/acme/a/blobs/uploads/?digest=" + d + " HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}"),
		[]byte("POST /v2/acme/a/blobs/uploads/ HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("PATCH /v2/acme/a/blobs/uploads/0b8f9b9e-6a43-4e5e-9d4b-6f1c5b1b0c1d HTTP/1.1\r\nHost: r\r\nContent-Range: 0-1\r\nContent-Length: 2\r\n\r\n{}"),
		[]byte("PUT /v2/acme/a/manifests/v1 HTTP/1.1\r\nHost: r\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 150\r\n\r\n" +
			`{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + d + `","size":2},"layers":[],"subject":{"digest":"` + d + `"}}`),
		[]byte("GET /v2/acme/a/referrers/" + d + "?artifactType=a/b HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("GET /v2/acme/a/blobs/sha512:00 HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("HEAD /v2/acme/a/manifests/latest HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("DELETE /v2/acme/a/manifests/" + d + " HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("GET /v2/_catalog?n=1&last=a HTTP/1.1\r\nHost: r\r\n\r\n"),
		[]byte("GET /v2/acme/a/tags/list HTTP/1.1\r\nHost: r\r\n\r\n"),
	}
}

func TestFuzzCorpus(t *testing.T) {
	fuzzcorpus.Sync(t, map[string][][]byte{"FuzzRequest": requestCorpus()}, *updateCorpus)
}

// FuzzRequest serves arbitrary HTTP requests (as the server parses them) to one registry:
// no panic, every answer a real status, and an upload never holds more than its limit.
func FuzzRequest(f *testing.F) {
	dir := f.TempDir()
	store, err := content.Open(dir+"/content", content.Options{})
	if err != nil {
		f.Fatal(err)
	}
	reg, err := New(Config{Dir: dir + "/registry", Store: store, MaxUploadBytes: 4096, MaxPendingBytes: 16384})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = reg.Close() })
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		req.RequestURI = ""
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, req)
		if rec.Code < 100 || rec.Code > 599 {
			t.Fatalf("status %d", rec.Code)
		}
		if p := reg.PendingUploadBytes(); p > 16384 {
			t.Fatalf("uploads in progress hold %d bytes, over the 16384 allowed", p)
		}
	})
}
