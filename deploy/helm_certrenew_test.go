package deploy

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// tlsNotAfterAnnotation is where the chart records when the certificate it
// generated expires: helm's template functions cannot read a certificate.
const tlsNotAfterAnnotation = "ferry.io/tls-not-after"

// fakeCluster serves, over plain HTTP, the little of the Kubernetes API
// that `helm template --dry-run=server` asks for to run the chart's
// lookup: discovery of the core group, and GET of one Secret, which holds
// *secret when it is not nil (404 otherwise). It returns a kubeconfig
// naming it.
// fakeClusterMu guards the Secret a fakeCluster serves: the test sets it
// between helm runs, which the race detector cannot see the server's
// reads ordered after.
var fakeClusterMu sync.Mutex

func fakeCluster(t *testing.T, secret **corev1.Secret) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1" {
			fmt.Fprint(w, `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[{"name":"secrets","singularName":"secret","namespaced":true,"kind":"Secret","verbs":["get","list"]}]}`)
			return
		}
		fakeClusterMu.Lock()
		s := *secret
		if s != nil {
			s = s.DeepCopy()
		}
		fakeClusterMu.Unlock()
		if s != nil && r.Method == http.MethodGet &&
			r.URL.Path == fmt.Sprintf("/api/v1/namespaces/%s/secrets/%s", s.Namespace, s.Name) {
			o := s.DeepCopy()
			o.APIVersion, o.Kind = "v1", "Secret"
			json.NewEncoder(w).Encode(o)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":%q}`, r.URL.Path+" not found")
	}))
	t.Cleanup(srv.Close)
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	err := os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
users: [{name: fake, user: {}}]
current-context: fake
`, srv.URL)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// pemCerts parses every certificate of a PEM bundle.
func pemCerts(t *testing.T, what string, b []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(b)) != 0 || len(certs) == 0 {
		t.Fatalf("%s is not a PEM bundle of certificates: %q", what, b)
	}
	return certs
}

// TestHelmSelfSignedCertificateRenewedNearExpiry: the chart-generated
// certificate (certManager disabled) was kept as long as its Secret
// existed, whatever its age, so after its lifetime (3650 days) every
// admission call failed TLS: pods started without ferry (failurePolicy
// Ignore) or not at all (Fail), until someone deleted the Secret by hand.
// Now the chart records the certificate's expiry on the Secret and
// generates a new pair on an upgrade within selfSignedRenewBeforeDays of
// it (or when the Secret does not say), keeping the old CA in the
// webhook's caBundle beside the new one, so the API server trusts the
// webhook while its pods still serve the old certificate, until kubelet
// updates their Secret volume and the webhook reloads it. The cluster is a
// fake API server serving the Secret to the chart's lookup, as helm
// upgrade does.
func TestHelmSelfSignedCertificateRenewedNearExpiry(t *testing.T) {
	const ns = "mesh"
	var inCluster *corev1.Secret
	kc := fakeCluster(t, &inCluster)
	renderIn := func(set ...string) *rendered {
		t.Helper()
		out, err := helmWithKubeconfig(t, kc, append([]string{"template", "rel", chartDir, "--namespace", ns, "--dry-run=server"}, set...)...)
		if err != nil {
			t.Fatalf("helm template --dry-run=server %v: %v\n%s", set, err, out)
		}
		r := decodeRendered(t, out)
		if len(r.secrets) != 1 {
			t.Fatalf("%d Secrets rendered, want 1", len(r.secrets))
		}
		return r
	}
	// check verifies what a rendering holds together: the Secret's pair
	// serves under the Service's name for a client trusting the caBundle,
	// the Secret's CA is in the caBundle, and the annotation gives the
	// certificate's expiry.
	check := func(what string, r *rendered) (sec corev1.Secret, leaf *x509.Certificate, bundle []*x509.Certificate, caBundle []byte) {
		t.Helper()
		svcDNS, _ := checkCommon(t, r, ns)
		sec = r.secrets[0]
		leaf = pemCerts(t, what+": tls.crt", sec.Data["tls.crt"])[0]
		caBundle = r.webhooks[0].Webhooks[0].ClientConfig.CABundle
		bundle = pemCerts(t, what+": caBundle", caBundle)
		if !bytes.Contains(caBundle, sec.Data["ca.crt"]) {
			t.Errorf("%s: the Secret's ca.crt is not in the caBundle", what)
		}
		notAfter, err := time.Parse(time.RFC3339, sec.Annotations[tlsNotAfterAnnotation])
		if err != nil {
			t.Errorf("%s: Secret annotation %s=%q: %v", what, tlsNotAfterAnnotation, sec.Annotations[tlsNotAfterAnnotation], err)
		} else if d := notAfter.Sub(leaf.NotAfter); d < -time.Minute || d > time.Minute {
			t.Errorf("%s: annotation %s says %s, the certificate expires %s", what, tlsNotAfterAnnotation, notAfter, leaf.NotAfter)
		}
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		os.WriteFile(certFile, sec.Data["tls.crt"], 0o600)
		os.WriteFile(keyFile, sec.Data["tls.key"], 0o600)
		serveAndVerify(t, certFile, keyFile, caBundle, svcDNS)
		return sec, leaf, bundle, caBundle
	}
	days := func(c *x509.Certificate) float64 { return time.Until(c.NotAfter).Hours() / 24 }

	// Install: nothing in the cluster, a new pair for selfSignedValidityDays.
	first, firstLeaf, bundle, _ := check("install", renderIn("--set", "selfSignedValidityDays=365"))
	if d := days(firstLeaf); d < 364 || d > 365.1 {
		t.Errorf("install: the certificate expires in %.1f days, want 365", d)
	}
	if len(bundle) != 1 {
		t.Errorf("install: caBundle holds %d certificates, want the one CA", len(bundle))
	}
	firstCA := first.Data["ca.crt"]
	first.Namespace = ns

	// Upgrade with the certificate far from expiry: kept as it is.
	fakeClusterMu.Lock()
	inCluster = &first
	fakeClusterMu.Unlock()
	kept, _, bundle, _ := check("upgrade, not due", renderIn("--set", "selfSignedValidityDays=365"))
	if !bytes.Equal(kept.Data["tls.crt"], first.Data["tls.crt"]) || !bytes.Equal(kept.Data["tls.key"], first.Data["tls.key"]) ||
		!bytes.Equal(kept.Data["ca.crt"], firstCA) || len(bundle) != 1 {
		t.Errorf("upgrade, not due: the pair was replaced (or the caBundle holds %d CAs)", len(bundle))
	}

	// Upgrades when the certificate is due: within renewBefore of its
	// expiry (the default, and one given), or a Secret that does not say
	// when it expires (written by an older chart), or says it unreadably.
	due := func(ann map[string]string) *corev1.Secret {
		s := first.DeepCopy()
		s.Annotations = ann
		return s
	}
	soon := time.Now().Add(10 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name   string
		secret *corev1.Secret
		set    []string
	}{
		{"10 days left, renewBefore 30 (the default)", due(map[string]string{tlsNotAfterAnnotation: soon}), nil},
		{"10 days left, renewBefore 11", due(map[string]string{tlsNotAfterAnnotation: soon}), []string{"--set", "selfSignedRenewBeforeDays=11"}},
		{"expired", due(map[string]string{tlsNotAfterAnnotation: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}), nil},
		{"no annotation (an older chart's Secret)", due(nil), nil},
		{"unreadable annotation", due(map[string]string{tlsNotAfterAnnotation: "next year"}), nil},
	} {
		fakeClusterMu.Lock()
		inCluster = tc.secret
		fakeClusterMu.Unlock()
		sec, leaf, bundle, caBundle := check(tc.name, renderIn(tc.set...))
		if bytes.Equal(sec.Data["tls.crt"], first.Data["tls.crt"]) || bytes.Equal(sec.Data["ca.crt"], firstCA) {
			t.Errorf("%s: the certificate was not renewed", tc.name)
			continue
		}
		if d := days(leaf); d < 3649 || d > 3650.1 {
			t.Errorf("%s: the new certificate expires in %.1f days, want selfSignedValidityDays (3650)", tc.name, d)
		}
		// The old CA stays trusted beside the new one: the webhook's pods
		// serve the old certificate until their volume is updated.
		oldCA := pemCerts(t, "old ca.crt", firstCA)[0]
		newCA := pemCerts(t, "new ca.crt", sec.Data["ca.crt"])
		if len(newCA) != 1 || len(bundle) != 2 || !bundle[0].Equal(newCA[0]) || !bundle[1].Equal(oldCA) {
			t.Errorf("%s: caBundle holds %d certificates, want the new CA then the old one", tc.name, len(bundle))
		}
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		os.WriteFile(certFile, first.Data["tls.crt"], 0o600)
		os.WriteFile(keyFile, first.Data["tls.key"], 0o600)
		svcDNS := fmt.Sprintf("%s.%s.svc", leaf.DNSNames[0], ns)
		serveAndVerify(t, certFile, keyFile, caBundle, svcDNS)
	}
	fakeClusterMu.Lock()
	inCluster = nil
	fakeClusterMu.Unlock()

	// A renewal window as long as the lifetime would renew at every
	// upgrade: refused, naming both keys.
	for _, set := range []string{"selfSignedValidityDays=30", "selfSignedValidityDays=10,selfSignedRenewBeforeDays=20"} {
		out, err := helm(t, "template", "rel", chartDir, "--set", set)
		if err == nil || !strings.Contains(out, "selfSignedRenewBeforeDays") || !strings.Contains(out, "selfSignedValidityDays") {
			t.Errorf("--set %s: err %v, want an error naming selfSignedRenewBeforeDays and selfSignedValidityDays:\n%.600s", set, err, out)
		}
	}
	out, err := helm(t, "template", "rel", chartDir, "--set", "selfSignedRenewBeforeDays=-1")
	if err == nil || !strings.Contains(out, "/selfSignedRenewBeforeDays") {
		t.Errorf("selfSignedRenewBeforeDays=-1: err %v, want the schema to refuse it:\n%.600s", err, out)
	}
}
