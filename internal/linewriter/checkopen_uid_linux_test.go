package linewriter

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// uidHelperEnv makes the test binary, started again by
// TestCheckOpenJudgesAsTheEffectiveUID, take the uids it names and print
// what CheckOpen and OpenFile say of a path.
const uidHelperEnv = "FERRY_LINEWRITER_UID_HELPER"

// CheckOpen (ferry check, for a telemetry.access_log file) judges a file
// to be created as OpenFile (ferry run) creates it: with the process's
// effective uid, the one open(2) uses. It asked access(2), which checks
// the real uid: a ferry started set-uid, or with its real and effective
// uids otherwise apart, was told a directory it cannot create the file in
// is fine, or one it can is not.
//
// The test needs root (CI runs as root): only root can start a process
// whose real and effective uids differ. It is skipped, saying so, as any
// other user.
func TestCheckOpenJudgesAsTheEffectiveUID(t *testing.T) {
	if spec := os.Getenv(uidHelperEnv); spec != "" {
		uidHelper(spec)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test runs processes whose real and effective uids differ, which only root can set up")
	}
	// A directory root owns, which others may search but not write: root
	// can create the file there, uid 65534 cannot.
	dir, err := os.MkdirTemp("", "ferry-linewriter-uid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "access.log")
	for _, tc := range []struct {
		name      string
		real, eff int
		wantOpen  bool // OpenFile, as the effective uid, can create the file
	}{
		{"real root, effective 65534", 0, 65534, false},
		{"real 65534, effective root", 65534, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(path)
			cmd := exec.Command(os.Args[0], "-test.run=^TestCheckOpenJudgesAsTheEffectiveUID$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d:%s", uidHelperEnv, tc.real, tc.eff, path))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			var check, open string
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "check: "); ok {
					check = v
				}
				if v, ok := strings.CutPrefix(line, "open: "); ok {
					open = v
				}
			}
			if check == "" || open == "" {
				t.Fatalf("the helper printed no verdicts:\n%s", out)
			}
			if (open == "ok") != tc.wantOpen {
				t.Fatalf("OpenFile: %s; the test's premise is that it %s", open, map[bool]string{true: "succeeds", false: "fails"}[tc.wantOpen])
			}
			if (check == "ok") != (open == "ok") {
				t.Errorf("CheckOpen says %q where OpenFile, which ferry run uses, says %q", check, open)
			}
		})
	}
}

// uidHelper takes "real:effective:path": it sets those uids (the saved one
// stays root, so the process could take root back) and prints CheckOpen's
// and OpenFile's verdicts on path.
func uidHelper(spec string) {
	parts := strings.SplitN(spec, ":", 3)
	if len(parts) != 3 {
		fmt.Println("bad spec:", spec)
		os.Exit(3)
	}
	real, err1 := strconv.Atoi(parts[0])
	eff, err2 := strconv.Atoi(parts[1])
	path := parts[2]
	if err1 != nil || err2 != nil {
		fmt.Println("bad spec:", spec)
		os.Exit(3)
	}
	if err := syscall.Setresuid(real, eff, 0); err != nil {
		fmt.Println("setresuid:", err)
		os.Exit(3)
	}
	verdict := func(err error) string {
		if err == nil {
			return "ok"
		}
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return errno.Error()
		}
		return err.Error()
	}
	fmt.Println("check:", verdict(CheckOpen(path)))
	f, err := OpenFile(path, nil)
	if err == nil {
		f.Close()
		os.Remove(path)
	}
	fmt.Println("open:", verdict(err))
	os.Exit(0)
}
