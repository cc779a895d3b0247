package webhook_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook"
)

// BenchmarkReview is one AdmissionReview through the handler (no TLS):
// decode, inject, diff, encode.
func BenchmarkReview(b *testing.B) {
	review, err := os.ReadFile("testdata/review-pod.json")
	if err != nil {
		b.Fatal(err)
	}
	inj, err := inject.New(inject.Options{})
	if err != nil {
		b.Fatal(err)
	}
	h := webhook.NewHandler(inj, webhook.Options{})
	b.ReportAllocs()
	b.SetBytes(int64(len(review)))
	for b.Loop() {
		req := httptest.NewRequest("POST", webhook.Path, bytes.NewReader(review))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
