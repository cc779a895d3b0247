package nodes

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBodyReaderRepeatsBlock(t *testing.T) {
	n := int64(len(bodyBlock))*2 + 5
	b, err := io.ReadAll(NewBody(n))
	if err != nil || int64(len(b)) != n {
		t.Fatalf("read %d bytes, %v; want %d", len(b), err, n)
	}
	if string(b[len(bodyBlock):2*len(bodyBlock)]) != string(bodyBlock) || string(b[2*len(bodyBlock):]) != string(bodyBlock[:5]) {
		t.Error("body does not repeat the block")
	}
}

// The floor relay carries keep-alive exchanges of every size the harness
// asks for, downloads and uploads, byte for byte.
func TestH1FloorRelays(t *testing.T) {
	listen := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	origin := httptest.NewServer(OriginHandler())
	defer origin.Close()
	addr := listen()
	go ServeH1Floor(addr, strings.TrimPrefix(origin.URL, "http://"))
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	var res *http.Response
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if res, err = client.Get("http://" + addr + "/?size=1"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			break
		}
		time.Sleep(10 * time.Millisecond) // the relay's listener is starting
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, 1024, 100 << 10, 3<<20 + 7} {
		res, err := client.Get(fmt.Sprintf("http://%s/?size=%d", addr, size))
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(res.Body)
		res.Body.Close()
		want, _ := io.ReadAll(NewBody(size))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("size %d: read %d bytes, %v; want the origin's %d", size, len(got), err, size)
		}
	}
	const up = 1<<20 + 3
	body, _ := io.ReadAll(NewBody(up))
	res, err = client.Post("http://"+addr+"/", "application/octet-stream", bytes.NewReader(body)) // with a Content-Length
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), strconv.Itoa(up)) {
		t.Fatalf("upload answered %q; want the %d bytes counted", b, up)
	}
}
