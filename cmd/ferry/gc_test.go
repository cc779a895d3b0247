package main

import (
	"errors"
	"io/fs"
	"testing"
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
		{"no cgroup files", nil, nil, gcSettings{ferryGOGC, 0}},
		{"cgroup v2 limit", nil, map[string]string{v2: "268435456\n"}, gcSettings{ferryGOGC, 241591910}},
		{"cgroup v2 unlimited", nil, map[string]string{v2: "max\n", v1: "1000"}, gcSettings{ferryGOGC, 0}},
		{"cgroup v1 limit", nil, map[string]string{v1: "1073741824"}, gcSettings{ferryGOGC, 966367641}},
		{"cgroup v1 unlimited", nil, map[string]string{v1: "9223372036854771712"}, gcSettings{ferryGOGC, 0}},
		{"GOGC set", map[string]string{"GOGC": "100"}, map[string]string{v2: "1000000"}, gcSettings{0, 900000}},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "64MiB"}, map[string]string{v2: "1000000"}, gcSettings{ferryGOGC, 0}},
		{"both set", map[string]string{"GOGC": "off", "GOMEMLIMIT": "1GiB"}, map[string]string{v2: "1000000"}, gcSettings{}},
	} {
		if got := chooseGC(env(c.env), files(c.files)); got != c.want {
			t.Errorf("%s: %+v; want %+v", c.name, got, c.want)
		}
	}
	if got := chooseGC(env(nil), func(string) ([]byte, error) { return nil, errors.New("permission denied") }); got != (gcSettings{ferryGOGC, 0}) {
		t.Errorf("unreadable cgroup files: %+v", got)
	}
}
