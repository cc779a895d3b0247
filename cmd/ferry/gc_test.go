package main

import (
	"errors"
	"io/fs"
	"runtime"
	"testing"
	"time"
)

func TestChooseGC(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	v2, v1 := cgroupMemoryFiles[0], cgroupMemoryFiles[1]
	for _, c := range []struct {
		name  string
		env   map[string]string
		files map[string]string
		want  gcSettings
	}{
		{"no cgroup files", nil, nil, gcSettings{true, 0}},
		{"cgroup v2 limit", nil, map[string]string{v2: "268435456\n"}, gcSettings{true, 241591910}},
		{"cgroup v2 unlimited", nil, map[string]string{v2: "max\n", v1: "1000"}, gcSettings{true, 0}},
		{"cgroup v1 limit", nil, map[string]string{v1: "1073741824"}, gcSettings{true, 966367641}},
		{"cgroup v1 unlimited", nil, map[string]string{v1: "9223372036854771712"}, gcSettings{true, 0}},
		{"GOGC set", map[string]string{"GOGC": "100"}, map[string]string{v2: "1000000"}, gcSettings{false, 900000}},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "64MiB"}, map[string]string{v2: "1000000"}, gcSettings{true, 0}},
		{"both set", map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, map[string]string{v2: "1000000"}, gcSettings{}},
	} {
		if got := chooseGC(env(c.env), files(c.files)); got != c.want {
			t.Errorf("%s: %+v; want %+v", c.name, got, c.want)
		}
	}
	if got := chooseGC(env(nil), func(string) ([]byte, error) { return nil, errors.New("permission denied") }); got != (gcSettings{true, 0}) {
		t.Errorf("unreadable cgroup files: %+v", got)
	}
}

func TestGCPercentFor(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, gcMaxPercent}, {1 << 20, gcMaxPercent}, {2 << 20, 400}, {4 << 20, 400}, {8 << 20, 200},
		{16 << 20, 100}, {100 << 20, 100}, {10 << 30, 100}, {5 << 20, 320},
	} {
		if got := gcPercentFor(c.live); got != c.want {
			t.Errorf("live %d: GOGC %d; want %d", c.live, got, c.want)
		}
	}
}

// watchGC's function runs after collections, again and again.
func TestWatchGCRunsAfterEveryCollection(t *testing.T) {
	calls := make(chan struct{}, 100)
	watchGC(func() { calls <- struct{}{} })
	for i := 0; i < 3; i++ {
		deadline := time.Now().Add(10 * time.Second)
		got := false
		for !got && time.Now().Before(deadline) {
			runtime.GC()
			select {
			case <-calls:
				got = true
			case <-time.After(10 * time.Millisecond):
			}
		}
		if !got {
			t.Fatalf("no call after collection %d", i+1)
		}
	}
}
