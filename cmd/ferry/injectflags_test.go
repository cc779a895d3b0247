package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/ferrymesh/ferry/internal/syncbuf"
)

// TestInjectorFlagErrorsNameTheFlag: an error about one of the injector's
// flags names it as typed, in `ferry inject` and `ferry webhook` alike.
// They named the Options field instead ("inject options: pre-stop sleep
// 1.5s is not a whole number of seconds", "OTel endpoint", "Consul
// address", "image pull policy"), words the user never typed.
func TestInjectorFlagErrorsNameTheFlag(t *testing.T) {
	for _, tc := range []struct{ flag, value string }{
		{"--pre-stop-sleep", "1500ms"},
		{"--pre-stop-sleep", "-3s"},
		{"--otel-endpoint", "collector:4318"},
		{"--consul-addr", "grpc://consul:8502"},
		{"--image", "ferry mesh"},
		{"--image-pull-policy", "Sometimes"},
	} {
		var out, errb bytes.Buffer
		code := cmdInject([]string{tc.flag, tc.value}, strings.NewReader(""), &out, &errb)
		msg := strings.TrimSpace(errb.String())
		if code != exitConfig || !strings.HasPrefix(msg, "ferry inject: "+tc.flag+" ") || !strings.Contains(msg, tc.value) || strings.Contains(msg, "\n") {
			t.Errorf("ferry inject %s %s: exit %d %q, want exit %d with one line naming %s and %q", tc.flag, tc.value, code, msg, exitConfig, tc.flag, tc.value)
		}
		var werr syncbuf.Buffer
		code = runWebhook(context.Background(), []string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key", tc.flag, tc.value}, io.Discard, &werr, nil)
		msg = strings.TrimSpace(werr.String())
		if code != exitConfig || !strings.HasPrefix(msg, "ferry webhook: "+tc.flag+" ") || !strings.Contains(msg, tc.value) || strings.Contains(msg, "\n") {
			t.Errorf("ferry webhook %s %s: exit %d %q, want exit %d with one line naming %s and %q", tc.flag, tc.value, code, msg, exitConfig, tc.flag, tc.value)
		}
	}
}
