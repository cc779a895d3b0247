package routematch

import "testing"

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		earlier, later Key
		want           bool
	}{
		{NewKey("", ""), NewKey("files", "/x"), true},
		{NewKey("", "/api"), NewKey("", "/api/v2"), true},
		{NewKey("", "/api/"), NewKey("", "/api"), true},
		{NewKey("", "/api"), NewKey("files", "/api/x"), true},
		{NewKey("files", ""), NewKey("files", "/api"), true},
		{NewKey("files", "/api"), NewKey("", "/api"), false},
		{NewKey("", "/api"), NewKey("", "/apix"), false},
		{NewKey("", "/api/v2"), NewKey("", "/api"), false},
		{NewKey("a", ""), NewKey("b", ""), false},
	} {
		if got := tc.earlier.Covers(tc.later); got != tc.want {
			t.Errorf("%+v covers %+v: %v, want %v", tc.earlier, tc.later, got, tc.want)
		}
	}
	if i := Shadowed([]Key{NewKey("b", ""), NewKey("", "/a")}, NewKey("c", "/a/b")); i != 1 {
		t.Errorf("Shadowed = %d, want 1", i)
	}
}
