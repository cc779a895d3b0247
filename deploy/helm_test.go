package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/ferrymesh/ferry/deploy/inject"
	"github.com/ferrymesh/ferry/deploy/webhook"
	"github.com/ferrymesh/ferry/internal/shutdownbounds"
	"github.com/ferrymesh/ferry/internal/tooltest"
)

const chartDir = "helm/ferry"

// testKubeVersion is the Kubernetes version helm renders for unless a test
// says otherwise: the oldest the chart's defaults are for. helm's own
// default is the one it was built with (v1.20.0 for scripts/tool.sh's
// build), which the chart refuses.
const testKubeVersion = "1.30.0"

// helmBinary finds helm: env FERRY_HELM_BIN, else <repo>/bin/helm, else
// scripts/tool.sh helm. Without one the test is skipped, or fails when CI
// is set.
func helmBinary(t *testing.T) string {
	t.Helper()
	return tooltest.Binary(t, "helm")
}

func runHelm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := helm(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// helm runs helm and returns its stdout, or its stdout and stderr with the
// error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return helmWithKubeconfig(t, "", args...)
}

// helmWithKubeconfig runs helm as helm does, with kubeconfig (a fake
// cluster's) as its only cluster; empty: none.
func helmWithKubeconfig(t *testing.T, kubeconfig string, args ...string) (string, error) {
	t.Helper()
	readChart(t)
	if len(args) > 0 && (args[0] == "template" || args[0] == "lint") && !slices.Contains(args, "--kube-version") {
		args = append(slices.Clip(args), "--kube-version", testKubeVersion)
	}
	cmd := exec.Command(helmBinary(t), args...)
	// Keep helm away from any user configuration and cluster.
	home := t.TempDir()
	if kubeconfig == "" {
		kubeconfig = filepath.Join(home, "none")
	}
	cmd.Env = append(os.Environ(), "HELM_CONFIG_HOME="+home, "HELM_CACHE_HOME="+home, "HELM_DATA_HOME="+home, "KUBECONFIG="+kubeconfig)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// readChart reads every chart file in the test process: helm reads them in
// a child process, which go test's cache does not see, so without this a
// changed template would not rerun the tests.
func readChart(t *testing.T) {
	t.Helper()
	err := filepath.WalkDir(chartDir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		_, err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatalf("reading the chart: %v", err)
	}
}

func TestHelmLint(t *testing.T) {
	for _, set := range [][]string{nil, {"--set", "certManager.enabled=true"}, {"--set", "inject.nativeSidecar=false,replicaCount=1"}} {
		out := runHelm(t, append([]string{"lint", "--strict", chartDir}, set...)...)
		if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
			t.Errorf("helm lint %v: %s", set, out)
		}
	}
}

// rendered is one helm template run, decoded strictly into Kubernetes
// types.
type rendered struct {
	serviceAccounts []corev1.ServiceAccount
	secrets         []corev1.Secret
	services        []corev1.Service
	deployments     []appsv1.Deployment
	pdbs            []policyv1.PodDisruptionBudget
	webhooks        []admissionregistrationv1.MutatingWebhookConfiguration
	certificates    []certificate
	issuers         []issuer
}

// cert-manager's types are not in ferry's module graph: these hold the
// fields the chart writes, and strict decoding rejects anything else.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		CommonName  string   `json:"commonName"`
		DNSNames    []string `json:"dnsNames"`
		Duration    string   `json:"duration"`
		RenewBefore string   `json:"renewBefore"`
		PrivateKey  struct {
			Algorithm      string `json:"algorithm"`
			Size           int    `json:"size"`
			RotationPolicy string `json:"rotationPolicy"`
		} `json:"privateKey"`
		Usages    []string `json:"usages"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind"`
			Group string `json:"group"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

type issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned"`
	} `json:"spec"`
}

func render(t *testing.T, namespace string, set ...string) *rendered {
	t.Helper()
	out := runHelm(t, append([]string{"template", "rel", chartDir, "--namespace", namespace}, set...)...)
	return decodeRendered(t, out)
}

// decodeRendered decodes helm template's output strictly.
func decodeRendered(t *testing.T, out string) *rendered {
	t.Helper()
	r := &rendered{}
	n := 0
	for _, doc := range strings.Split(out, "\n---") {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		n++
		var head metav1.TypeMeta
		if err := sigsyaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("document %d: %v\n%s", n, err, doc)
		}
		strict := func(v any) {
			t.Helper()
			if err := sigsyaml.UnmarshalStrict([]byte(doc), v); err != nil {
				t.Fatalf("%s %s does not decode strictly: %v\n%s", head.APIVersion, head.Kind, err, doc)
			}
		}
		switch head.APIVersion + " " + head.Kind {
		case "v1 ServiceAccount":
			var o corev1.ServiceAccount
			strict(&o)
			r.serviceAccounts = append(r.serviceAccounts, o)
		case "v1 Secret":
			var o corev1.Secret
			strict(&o)
			r.secrets = append(r.secrets, o)
		case "v1 Service":
			var o corev1.Service
			strict(&o)
			r.services = append(r.services, o)
		case "apps/v1 Deployment":
			var o appsv1.Deployment
			strict(&o)
			r.deployments = append(r.deployments, o)
		case "policy/v1 PodDisruptionBudget":
			var o policyv1.PodDisruptionBudget
			strict(&o)
			r.pdbs = append(r.pdbs, o)
		case "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration":
			var o admissionregistrationv1.MutatingWebhookConfiguration
			strict(&o)
			r.webhooks = append(r.webhooks, o)
		case "cert-manager.io/v1 Certificate":
			var o certificate
			strict(&o)
			r.certificates = append(r.certificates, o)
		case "cert-manager.io/v1 Issuer":
			var o issuer
			strict(&o)
			r.issuers = append(r.issuers, o)
		default:
			t.Fatalf("unexpected object %s %s", head.APIVersion, head.Kind)
		}
	}
	if len(r.deployments) != 1 || len(r.services) != 1 || len(r.webhooks) != 1 {
		t.Fatalf("want one Deployment, Service and MutatingWebhookConfiguration, got %d, %d, %d",
			len(r.deployments), len(r.services), len(r.webhooks))
	}
	return r
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// checkCommon checks what every rendering must hold: the webhook points at
// the Service, on the path the handler serves, for pods created in
// labelled namespaces, and the Deployment serves what the Service targets
// with the certificate from the Secret the chart (or cert-manager) fills.
func checkCommon(t *testing.T, r *rendered, namespace string) (svcDNS, secretName string) {
	t.Helper()
	svc, dep, mwc := r.services[0], r.deployments[0], r.webhooks[0]
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	cc := wh.ClientConfig.Service
	if cc == nil || cc.Name != svc.Name || cc.Namespace != namespace || cc.Path == nil || *cc.Path != webhook.Path ||
		cc.Port == nil || *cc.Port != svc.Spec.Ports[0].Port {
		t.Errorf("clientConfig %+v does not point at service %s/%s:%d%s", cc, namespace, svc.Name, svc.Spec.Ports[0].Port, webhook.Path)
	}
	if !reflect.DeepEqual(wh.AdmissionReviewVersions, []string{"v1"}) || wh.SideEffects == nil ||
		*wh.SideEffects != admissionregistrationv1.SideEffectClassNone {
		t.Errorf("admissionReviewVersions %v sideEffects %v", wh.AdmissionReviewVersions, wh.SideEffects)
	}
	if len(wh.Rules) != 1 || !reflect.DeepEqual(wh.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) ||
		!reflect.DeepEqual(wh.Rules[0].Resources, []string{"pods"}) || !reflect.DeepEqual(wh.Rules[0].APIGroups, []string{""}) {
		t.Errorf("rules %+v", wh.Rules)
	}
	sel := wh.NamespaceSelector
	if sel == nil || sel.MatchLabels[inject.AnnotationInject] != inject.InjectEnabled {
		t.Errorf("namespaceSelector %+v lacks %s=%s", sel, inject.AnnotationInject, inject.InjectEnabled)
	} else {
		excluded := false
		for _, e := range sel.MatchExpressions {
			if e.Key == "kubernetes.io/metadata.name" && e.Operator == metav1.LabelSelectorOpNotIn && slices.Contains(e.Values, namespace) {
				excluded = true
			}
		}
		if !excluded {
			t.Errorf("namespaceSelector does not exclude the webhook's own namespace: %+v", sel.MatchExpressions)
		}
	}
	if svc.Namespace != namespace || dep.Namespace != namespace {
		t.Errorf("namespaces: service %q deployment %q", svc.Namespace, dep.Namespace)
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("service selector %s=%s does not select the webhook pods %v", k, v, dep.Spec.Template.Labels)
		}
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if svc.Spec.Ports[0].TargetPort.String() != c.Ports[0].Name {
		t.Errorf("service targets %s, container port is %s", svc.Spec.Ports[0].TargetPort.String(), c.Ports[0].Name)
	}
	if c.Args[0] != "webhook" || c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("container %+v", c)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || dep.Spec.Template.Spec.SecurityContext.RunAsNonRoot == nil {
		t.Errorf("security context %+v", sc)
	}
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secretName = v.Secret.SecretName
		}
	}
	if secretName == "" {
		t.Errorf("no secret volume")
	}
	return fmt.Sprintf("%s.%s.svc", svc.Name, namespace), secretName
}

func TestHelmTemplateSelfSigned(t *testing.T) {
	r := render(t, "mesh")
	svcDNS, secretName := checkCommon(t, r, "mesh")
	if len(r.certificates)+len(r.issuers) != 0 {
		t.Errorf("cert-manager objects without cert-manager")
	}
	if len(r.pdbs) != 1 || r.deployments[0].Spec.Replicas == nil || *r.deployments[0].Spec.Replicas != 2 {
		t.Errorf("pdbs %d replicas %v", len(r.pdbs), r.deployments[0].Spec.Replicas)
	}
	if len(r.serviceAccounts) != 1 || r.serviceAccounts[0].Name != r.deployments[0].Spec.Template.Spec.ServiceAccountName {
		t.Errorf("service account %+v", r.serviceAccounts)
	}
	if len(r.secrets) != 1 || r.secrets[0].Name != secretName || r.secrets[0].Type != corev1.SecretTypeTLS {
		t.Fatalf("secrets %+v, want %s", r.secrets, secretName)
	}
	args := strings.Join(r.deployments[0].Spec.Template.Spec.Containers[0].Args, " ")
	for _, want := range []string{"--tls-cert=/etc/ferry/tls/tls.crt", "--consul-addr=$$(HOST_IP):8500", "--image=ferrymesh/ferry:", "--pre-stop-sleep=5s"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if strings.Contains(args, "--no-native-sidecar") {
		t.Errorf("native sidecars are the default: %s", args)
	}

	// The generated certificate works: the webhook serves it, and a client
	// that trusts only the caBundle and dials the Service's name verifies it.
	caBundle := r.webhooks[0].Webhooks[0].ClientConfig.CABundle
	sec := r.secrets[0]
	if !bytes.Equal(caBundle, sec.Data["ca.crt"]) {
		t.Errorf("caBundle and the Secret's ca.crt differ")
	}
	block, _ := pem.Decode(caBundle)
	if block == nil {
		t.Fatalf("caBundle is not PEM: %q", caBundle)
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("caBundle: %v (CA %v)", err, ca != nil && ca.IsCA)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	os.WriteFile(certFile, sec.Data["tls.crt"], 0o600)
	os.WriteFile(keyFile, sec.Data["tls.key"], 0o600)
	serveAndVerify(t, certFile, keyFile, caBundle, svcDNS)
}

// serveAndVerify runs the webhook with the given pair and checks that a
// client trusting caBundle reaches /healthz under serverName.
func serveAndVerify(t *testing.T, certFile, keyFile string, caBundle []byte, serverName string) {
	t.Helper()
	certs, err := webhook.NewCertLoader(certFile, keyFile, nil)
	if err != nil {
		t.Fatalf("the rendered key pair does not load: %v", err)
	}
	inj, err := inject.New(inject.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- webhook.Serve(ctx, webhook.NewServer(webhook.NewHandler(inj, webhook.Options{}), certs, nil), ln, 0, 5*time.Second)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caBundle)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatalf("TLS with the rendered CA as %s: %v", serverName, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
}

func TestHelmTemplateCertManager(t *testing.T) {
	r := render(t, "ferry-system", "--set", "certManager.enabled=true")
	svcDNS, secretName := checkCommon(t, r, "ferry-system")
	if len(r.secrets) != 0 {
		t.Errorf("the chart wrote a Secret although cert-manager issues it")
	}
	if len(r.certificates) != 1 || len(r.issuers) != 1 {
		t.Fatalf("certificates %d issuers %d", len(r.certificates), len(r.issuers))
	}
	cert, iss := r.certificates[0], r.issuers[0]
	if cert.Spec.SecretName != secretName || !slices.Contains(cert.Spec.DNSNames, svcDNS) {
		t.Errorf("certificate secret %s dnsNames %v, want %s and %s", cert.Spec.SecretName, cert.Spec.DNSNames, secretName, svcDNS)
	}
	if cert.Spec.IssuerRef.Name != iss.Name || iss.Spec.SelfSigned == nil {
		t.Errorf("issuerRef %+v issuer %+v", cert.Spec.IssuerRef, iss)
	}
	// The usages fit the key: key encipherment is RSA key transport, which
	// an ECDSA key cannot do, and strict validators flag it on one.
	usages := slices.Sorted(slices.Values(cert.Spec.Usages))
	want := []string{"digital signature", "server auth"}
	if cert.Spec.PrivateKey.Algorithm == "RSA" {
		want = []string{"digital signature", "key encipherment", "server auth"}
	}
	if !slices.Equal(usages, want) {
		t.Errorf("certificate with a %s key asks for usages %q, want %q", cert.Spec.PrivateKey.Algorithm, cert.Spec.Usages, want)
	}
	mwc := r.webhooks[0]
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], "ferry-system/"+cert.Name; got != want {
		t.Errorf("inject-ca-from %q, want %q", got, want)
	}
	if len(mwc.Webhooks[0].ClientConfig.CABundle) != 0 {
		t.Errorf("caBundle set although cert-manager injects it")
	}

	r = render(t, "ferry-system", "--set", "certManager.enabled=true,certManager.issuerRef.name=corp-ca,certManager.issuerRef.kind=ClusterIssuer")
	if len(r.issuers) != 0 || r.certificates[0].Spec.IssuerRef.Name != "corp-ca" || r.certificates[0].Spec.IssuerRef.Kind != "ClusterIssuer" {
		t.Errorf("existing issuer: issuers %d ref %+v", len(r.issuers), r.certificates[0].Spec.IssuerRef)
	}
}

func TestHelmTemplateValues(t *testing.T) {
	r := render(t, "mesh", "--set", "inject.nativeSidecar=false,inject.preStopSleep=0s,replicaCount=1,inject.otelEndpoint=http://$(HOST_IP):4318,webhook.failurePolicy=Fail,image.tag=1.2.3",
		"--set", "webhook.namespaceSelector.matchLabels.mesh=ferry")
	checkCommonSelector := r.webhooks[0].Webhooks[0]
	if checkCommonSelector.NamespaceSelector.MatchLabels["mesh"] != "ferry" {
		t.Errorf("namespaceSelector %+v", checkCommonSelector.NamespaceSelector)
	}
	if *checkCommonSelector.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v", *checkCommonSelector.FailurePolicy)
	}
	if len(r.pdbs) != 0 {
		t.Errorf("a PodDisruptionBudget for one replica would block node drains")
	}
	c := r.deployments[0].Spec.Template.Spec.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"--no-native-sidecar", "--otel-endpoint=http://$$(HOST_IP):4318", "--image=ferrymesh/ferry:1.2.3", "--pre-stop-sleep=0s"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %q", args, want)
		}
	}
	if c.Image != "ferrymesh/ferry:1.2.3" {
		t.Errorf("image %s", c.Image)
	}
	raw, _ := json.Marshal(r.webhooks[0])
	if !strings.Contains(string(raw), `"objectSelector"`) {
		t.Errorf("objectSelector missing")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestHelmRejectsBadValues: values.schema.json turns a wrong value into an
// error naming the key, before anything is rendered.
func TestHelmRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ set, msg string }{
		{"webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"},
		{"webhook.timeoutSeconds=60", "/webhook/timeoutSeconds"},
		{"inject.nativeSidecar=maybe", "/inject/nativeSidecar"},
		{"inject.otelEndpoint=collector:4318", "/inject/otelEndpoint"},
		{"replicaCount=0", "/replicaCount"},
		{"webhook.logLevel=loud", "/webhook/logLevel"},
		{"inject.preStopSleep=1500ms", "/inject/preStopSleep"},
	} {
		out, err := helm(t, "template", "rel", chartDir, "--set", tc.set)
		if err == nil || !strings.Contains(out, tc.msg) {
			t.Errorf("--set %s: err %v, output %q, want an error naming %s", tc.set, err, out, tc.msg)
		}
	}
}

// TestHelmRejectsUnknownValues: a misspelt key (inject.nativesidecar,
// webhok.port) was accepted and silently ignored, so the install ran with
// the default the user meant to change (native sidecars on a cluster
// without them, the wrong failurePolicy...). values.schema.json refuses a
// key the chart does not read, naming it, in every object whose keys the
// chart defines; free-form maps (selectors, resources, annotations, labels,
// affinity, issuerRef) stay open.
func TestHelmRejectsUnknownValues(t *testing.T) {
	for _, tc := range []struct{ set, key string }{
		{"inject.nativesidecar=false", "nativesidecar"},
		{"webhok.port=9443", "webhok"},
		{"webhook.failure_policy=Fail", "failure_policy"},
		{"image.tags=1.2.3", "tags"},
		{"certManager.enable=true", "enable"},
		{"serviceAccount.creat=false", "creat"},
		{"podDisruptionBudget.maxUnavailable=1", "maxUnavailable"},
	} {
		out, err := helm(t, "template", "rel", chartDir, "--set", tc.set)
		if err == nil || !strings.Contains(out, tc.key) {
			t.Errorf("--set %s: err %v, want an error naming %s; output:\n%.600s", tc.set, err, tc.key, out)
		}
	}
	// Free-form maps take any key.
	runHelm(t, "template", "rel", chartDir, "--set",
		"podAnnotations.a=b,podLabels.c=d,resources.limits.cpu=1,webhook.namespaceSelector.matchLabels.x=y,nodeSelector.n=m,certManager.issuerRef.group=cert-manager.io")
}

// The chart's defaults must fit the default terminationGracePeriodSeconds of
// the pods its webhook injects, 30s, with what ferry spends after the grace:
// the webhook runs with the chart's pre-stop sleep and the injector's
// default delay and grace (the chart sets neither).
func TestHelmDefaultsFitTheDefaultGracePeriod(t *testing.T) {
	r := render(t, "mesh")
	var preStop time.Duration
	found := false
	for _, a := range r.deployments[0].Spec.Template.Spec.Containers[0].Args {
		if v, ok := strings.CutPrefix(a, "--pre-stop-sleep="); ok {
			d, err := time.ParseDuration(v)
			if err != nil {
				t.Fatalf("%s: %v", a, err)
			}
			preStop, found = d, true
		}
		if strings.HasPrefix(a, "--shutdown-") {
			t.Fatalf("the webhook's args set %s: count it here", a)
		}
	}
	if !found {
		t.Fatal("the webhook's args have no --pre-stop-sleep: count the injector's default here")
	}
	need := preStop + inject.DefaultShutdownDelay + inject.DefaultShutdownGrace +
		shutdownbounds.ReportWait + shutdownbounds.TelemetryFlush + shutdownbounds.LogClose
	if need > 30*time.Second {
		t.Errorf("with the chart's defaults ferry's shutdown takes up to %s (pre-stop sleep %s + delay %s + grace %s + %s after the grace), more than the default terminationGracePeriodSeconds of 30s",
			need, preStop, inject.DefaultShutdownDelay, inject.DefaultShutdownGrace, need-preStop-inject.DefaultShutdownDelay-inject.DefaultShutdownGrace)
	}
}
