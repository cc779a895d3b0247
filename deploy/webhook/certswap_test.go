package webhook_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrymesh/ferry/deploy/webhook"
	"github.com/ferrymesh/ferry/deploy/webhook/webhooktest"
)

// secretVolume lays out files as kubelet does in a Secret volume:
// dir/tls.crt -> ..data/tls.crt, ..data -> ..<generation>, and swaps a new
// generation in with one rename of the ..data link.
type secretVolume struct {
	dir string
	gen int
}

func (v *secretVolume) publish(t *testing.T, certs webhooktest.Certs) {
	t.Helper()
	v.gen++
	genDir := filepath.Join(v.dir, "..gen"+strings.Repeat("x", v.gen))
	if err := os.Mkdir(genDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"tls.crt": certs.CertFile, "tls.key": certs.KeyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(genDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(genDir), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestCertificateRotatedInASecretVolume: the chart mounts the serving
// certificate from a Secret; when cert-manager (or a helm upgrade) rotates
// it, kubelet writes the new pair to a new directory and swaps the ..data
// link. The running webhook serves the new certificate on the next
// handshakes without a restart, and keeps serving the old one until then.
func TestCertificateRotatedInASecretVolume(t *testing.T) {
	vol := &secretVolume{dir: t.TempDir()}
	first := webhooktest.Write(t, t.TempDir())
	vol.publish(t, first)
	loader, err := webhook.NewCertLoader(filepath.Join(vol.dir, "tls.crt"), filepath.Join(vol.dir, "tls.key"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.NewHandler(nil, webhook.Options{}), loader, nil)
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })

	serial := func(cfg *tls.Config) (string, error) {
		conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	if got, err := serial(&tls.Config{RootCAs: first.Pool}); err != nil || got != first.Serial.String() {
		t.Fatalf("serving %s (%v), want %s", got, err, first.Serial)
	}
	for i := 0; i < 3; i++ {
		next := webhooktest.Write(t, t.TempDir())
		vol.publish(t, next)
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := serial(&tls.Config{RootCAs: next.Pool})
			if err == nil && got == next.Serial.String() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rotation %d: still serving %s (%v) 5s after the swap, want %s", i+1, got, err, next.Serial)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}
