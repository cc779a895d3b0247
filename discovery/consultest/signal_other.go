//go:build !windows

package consultest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

const sigStop, sigCont = syscall.SIGSTOP, syscall.SIGCONT

// canSignal reports why sig cannot be sent to the agent: here it always can.
func canSignal(syscall.Signal) error { return nil }

// terminate asks the agent to exit (SIGTERM); Stop waits for it.
func terminate(p *os.Process) {
	_ = p.Signal(syscall.SIGCONT) // a paused agent cannot exit
	_ = p.Signal(syscall.SIGTERM)
}

// isStopped reports whether process pid is stopped by a signal. On Linux
// every one of its threads must be: a thread not stopped yet can still
// answer a request. Elsewhere ps says it of the process.
func isStopped(pid int) (bool, error) {
	if runtime.GOOS == "linux" {
		return threadsStopped("/proc", pid)
	}
	return psStopped(pid)
}

// threadsStopped reads the state of each thread of process pid under proc
// (/proc/<pid>/task/<tid>/stat): true when every one is stopped (T).
func threadsStopped(proc string, pid int) (bool, error) {
	dir := fmt.Sprintf("%s/%d/task", proc, pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("threads of process %d: %w", pid, err)
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread ended: it runs no more
		}
		if err != nil {
			return false, fmt.Errorf("thread %s of process %d: %w", task.Name(), pid, err)
		}
		state, err := statState(stat)
		if err != nil {
			return false, fmt.Errorf("thread %s of process %d: %w", task.Name(), pid, err)
		}
		switch state {
		case 'T':
		case 'Z', 'X':
			return false, fmt.Errorf("process %d exited", pid)
		default:
			return false, nil
		}
	}
	return true, nil
}

// statState is the state field of a /proc stat line, "tid (comm) S ...";
// comm may hold spaces and parentheses, the state follows its last ')'.
func statState(stat []byte) (byte, error) {
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) || s[i+1] != ' ' {
		return 0, fmt.Errorf("unexpected stat line %q", s)
	}
	return s[i+2], nil
}

// psStopped asks ps for the state of process pid: stopped when it begins
// with T.
func psStopped(pid int) (bool, error) {
	out, err := exec.Command("ps", "-o", "stat=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return false, fmt.Errorf("ps for process %d: %w", pid, err)
	}
	return strings.HasPrefix(strings.TrimSpace(string(out)), "T"), nil
}
