package deploy

import (
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, RUN, ...
	args string
	line int
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: unterminated continuation at line %d", path, start)
	}
	return out
}

// TestDockerfile checks the image's build for what Docker cannot be run
// here to prove: a multi-stage build of a static binary (CGO_ENABLED=0)
// from ./cmd/ferry, a minimal final base, a non-root numeric user, the
// binary as exec-form entrypoint, and a Go version in step with go.mod.
func TestDockerfile(t *testing.T) {
	ins := parseDockerfile(t, "Dockerfile")
	var stages [][]instruction
	var stageNames []string
	var globalArgs []instruction
	for _, in := range ins {
		switch {
		case in.cmd == "FROM":
			stages = append(stages, nil)
			name := ""
			if m := regexp.MustCompile(`(?i)\sAS\s+(\S+)$`).FindStringSubmatch(in.args); m != nil {
				name = m[1]
			}
			stageNames = append(stageNames, name)
		case len(stages) == 0:
			if in.cmd != "ARG" {
				t.Errorf("line %d: %s before the first FROM", in.line, in.cmd)
			}
			globalArgs = append(globalArgs, in)
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a multi-stage build", len(stages))
	}

	// Build stage: a static build of ./cmd/ferry.
	build := stages[0]
	built := false
	for _, in := range build {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			built = true
			for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/ferry", "-o /out/ferry", "main.version="} {
				if !strings.Contains(in.args, want) {
					t.Errorf("line %d: go build lacks %q: %s", in.line, want, in.args)
				}
			}
		}
	}
	if !built {
		t.Errorf("the first stage runs no go build")
	}
	goVersion := ""
	for _, a := range globalArgs {
		if v, ok := strings.CutPrefix(a.args, "GO_VERSION="); ok {
			goVersion = v
		}
	}
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil || goVersion != string(m[1]) {
		t.Errorf("ARG GO_VERSION=%s, go.mod says go %s", goVersion, m[1])
	}

	// Final stage: minimal base, the binary only, non-root.
	final := stages[len(stages)-1]
	base := strings.Fields(ins[indexOfFrom(ins, len(stages)-1)].args)
	image := base[len(base)-1]
	if len(base) >= 3 && strings.EqualFold(base[len(base)-2], "AS") {
		image = base[len(base)-3]
	}
	if image != "scratch" && !strings.HasPrefix(image, "gcr.io/distroless/static") {
		t.Errorf("final base %q: want scratch or distroless static", image)
	}
	var user, entrypoint string
	copied := false
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "COPY":
			if strings.Contains(in.args, "--from="+stageNames[0]) && strings.HasSuffix(in.args, " /ferry") {
				copied = true
			}
		case "RUN":
			t.Errorf("line %d: RUN in the final stage (no shell in a minimal image)", in.line)
		}
	}
	if !copied {
		t.Errorf("the final stage does not copy /ferry from the build stage %q", stageNames[0])
	}
	uid, _, _ := strings.Cut(user, ":")
	if !regexp.MustCompile(`^[1-9][0-9]*$`).MatchString(uid) {
		t.Errorf("USER %q: want a numeric non-root uid (kubelet checks runAsNonRoot on numbers)", user)
	}
	var ep []string
	if err := json.Unmarshal([]byte(entrypoint), &ep); err != nil || len(ep) == 0 || ep[0] != "/ferry" {
		t.Errorf("ENTRYPOINT %s: want exec form [\"/ferry\"] (the injector passes only args)", entrypoint)
	}
	if _, err := os.Stat("Dockerfile.dockerignore"); err != nil {
		t.Errorf("no Dockerfile.dockerignore: %v", err)
	}
}

func indexOfFrom(ins []instruction, n int) int {
	for i, in := range ins {
		if in.cmd == "FROM" {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}

// TestStaticBinary builds ./cmd/ferry the way the Dockerfile does and
// checks that the result is a static executable (no ELF interpreter, no
// shared libraries) that runs: what the distroless static base requires.
func TestStaticBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the ferry binary")
	}
	bin := filepath.Join(t.TempDir(), "ferry")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test", "-o", bin, "../cmd/ferry")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary asks for a dynamic loader")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("shared libraries %v (%v)", libs, err)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ferry test" {
		t.Errorf("ferry version: %q %v", out, err)
	}
}
