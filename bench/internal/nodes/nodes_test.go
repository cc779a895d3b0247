package nodes

import (
	"io"
	"testing"
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
