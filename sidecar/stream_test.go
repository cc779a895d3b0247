package sidecar

import (
	"errors"
	"io"
	"testing"
	"time"
)

// A retry retires the attempt's hold on the request body: the attempt's
// transport then reads nothing more, and the next attempt reads every byte.
// A hold with a Read in progress is not retired.
func TestAttemptBodyRetire(t *testing.T) {
	pr, pw := io.Pipe()
	body := &requestBody{rc: pr}
	first := body.attempt()

	// A Read waiting for the caller's bytes: the hold cannot be retired.
	got := make(chan []byte, 1)
	go func() {
		p := make([]byte, 3)
		n, _ := first.Read(p)
		got <- p[:n]
	}()
	waitFor(t, "the first attempt's Read to start", 5*time.Second, func() bool { return first.state.Load() == holdReading })
	if body.retire() {
		t.Fatal("a hold with a Read in progress was retired")
	}
	pw.Write([]byte("abc"))
	if b := <-got; string(b) != "abc" {
		t.Fatalf("first attempt read %q", b)
	}

	// No Read in progress: retired; the attempt's later reads take nothing.
	if !body.retire() {
		t.Fatal("an idle hold was not retired")
	}
	if n, err := first.Read(make([]byte, 8)); n != 0 || !errors.Is(err, errAttemptRetired) {
		t.Fatalf("a retired attempt read %d bytes, %v", n, err)
	}
	first.Close() // the retired attempt's transport closing the body leaves it to the retry
	second := body.attempt()
	go func() { pw.Write([]byte("defg")); pw.Close() }()
	rest, err := io.ReadAll(second)
	if err != nil || string(rest) != "defg" {
		t.Fatalf("the retry read %q, %v; want every byte after the first attempt's", rest, err)
	}
}
