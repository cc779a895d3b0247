package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testdata = "../../deploy/inject/testdata/"

func TestInjectStdinToStdout(t *testing.T) {
	in, err := os.ReadFile(testdata + "multidoc.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(testdata + "multidoc.golden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := cmdInject([]string{"--image", "ferrymesh/ferry:test"}, bytes.NewReader(in), &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("stdout differs from the golden file:\n%s", out.String())
	}
	if !strings.Contains(errb.String(), "pod on-host: not injected: hostNetwork pod") ||
		!strings.Contains(errb.String(), "1 injected, 1 not injected, 1 other objects passed through") {
		t.Errorf("stderr %q", errb.String())
	}
}

func TestInjectFilesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	for name, src := range map[string]string{"a.yaml": "pod.in.yaml", "b.yml": "refuse-disabled.in.yaml", "notes.txt": "pod.in.yaml"} {
		data, err := os.ReadFile(testdata + src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, name), data, 0o600)
	}
	var out, errb bytes.Buffer
	code := run([]string{"inject", "-f", dir, "-f", testdata + "job.in.yaml", "--image", "ferrymesh/ferry:test"}, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	pod, _ := os.ReadFile(testdata + "pod.golden.yaml")
	disabled, _ := os.ReadFile(testdata + "refuse-disabled.in.yaml")
	job, _ := os.ReadFile(testdata + "job.golden.yaml")
	want := string(pod) + "---\n" + string(disabled) + "---\n" + string(job)
	if out.String() != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), want)
	}
	if !strings.Contains(errb.String(), "b.yml: deployment opt-out: not injected: annotation ferry.io/inject=disabled") {
		t.Errorf("stderr %q", errb.String())
	}
}

func TestInjectErrorsWriteNothing(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		stdin string
		code  int
		msg   string
	}{
		{[]string{}, "apiVersion: v1\nkind: Pod\nmetadata: {name: x\n", exitFail, "stdin: document 1 (line 1)"},
		{[]string{"-f", testdata + "pod.in.yaml", "-f", "-"}, "a: [", exitFail, "stdin: document 1"},
		{[]string{"-f", "/nonexistent.yaml"}, "", exitFail, "no such file"},
		{[]string{"--otel-endpoint", "collector:4318"}, "", exitConfig, "want an http:// or https:// URL"},
		{[]string{"--image-pull-policy", "Sometimes"}, "", exitConfig, "--image-pull-policy"},
		{[]string{"extra.yaml"}, "", exitConfig, `unexpected argument "extra.yaml"`},
		{[]string{"-f", "-", "-f", "-"}, "", exitConfig, "given twice"},
	} {
		var out, errb bytes.Buffer
		code := cmdInject(tc.args, strings.NewReader(tc.stdin), &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d stderr %q, want %d with %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
		if out.Len() != 0 {
			t.Errorf("%v: wrote %d bytes to stdout on failure", tc.args, out.Len())
		}
	}
}

// The default image follows the binary's version.
func TestInjectImageFollowsVersion(t *testing.T) {
	old := version
	version = "1.4.0"
	defer func() { version = old }()
	in, _ := os.ReadFile(testdata + "pod.in.yaml")
	var out, errb bytes.Buffer
	if code := cmdInject(nil, bytes.NewReader(in), &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "image: ferrymesh/ferry:1.4.0") {
		t.Errorf("output:\n%s", out.String())
	}
}

// The preStop sleep action needs Kubernetes 1.30 (the field is off by
// default on 1.29): --pre-stop-sleep 0 injects no preStop hook at all, for
// every pod, where ferry.io/pre-stop-sleep can only change one pod.
func TestInjectPreStopSleepFlag(t *testing.T) {
	in, err := os.ReadFile(testdata + "multidoc.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string // "" for no preStop hook
	}{
		{nil, "seconds: 5"},
		{[]string{"--pre-stop-sleep", "9s"}, "seconds: 9"},
		{[]string{"--pre-stop-sleep", "0"}, ""},
	} {
		var out, errb bytes.Buffer
		if code := cmdInject(append([]string{"--image", "ferrymesh/ferry:test"}, c.args...), bytes.NewReader(in), &out, &errb); code != exitOK {
			t.Fatalf("%v: exit %d: %s", c.args, code, errb.String())
		}
		s := out.String()
		if c.want == "" {
			if strings.Contains(s, "preStop") {
				t.Errorf("%v: a preStop hook was injected:\n%s", c.args, s)
			}
		} else if !strings.Contains(s, "preStop:") || !strings.Contains(s, c.want) {
			t.Errorf("%v: want a preStop sleep with %q:\n%s", c.args, c.want, s)
		}
	}
	for _, bad := range []string{"1500ms", "-3s"} {
		var out, errb bytes.Buffer
		if code := cmdInject([]string{"--pre-stop-sleep", bad}, bytes.NewReader(in), &out, &errb); code != exitConfig || !strings.Contains(errb.String(), "pre-stop") {
			t.Errorf("--pre-stop-sleep %s: exit %d, %q; want a config error naming it", bad, code, errb.String())
		}
	}
}
