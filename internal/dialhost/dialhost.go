// Package dialhost holds ferry's one rule for the host part of an address
// it will dial (a static endpoint, inbound.app, an endpoint the injector
// writes into a config), and for when two such addresses are one, so the
// config loader and the Kubernetes injector accept exactly the same hosts
// and refuse the same repeats.
package dialhost

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Valid reports whether host can name something to dial: an IP address
// (an IPv6 one with its zone, if any), or a host name Go's resolver looks
// up (letters, digits, '-', '_' and '.', at most 253 bytes). Any other host
// ("", "a@b", "a?b", "caf\u00e9", a control character) fails every dial.
func Valid(host string) bool {
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if len(host) > 253 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Key is what the host:port addr dials, for finding one endpoint written
// twice: an IP address in one form ("[0:0::1]:80" is "[::1]:80", and
// "[::ffff:127.0.0.1]:80" is "127.0.0.1:80", which Go dials for it), a
// host name in lower case ("LOCALHOST:80" is "localhost:80"). An addr
// that is not host:port is its own key.
func Key(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	} else {
		host = strings.ToLower(host)
	}
	return net.JoinHostPort(host, port)
}

// Bracket reads "fd00::2:8500", an IPv6 address and a port without
// the brackets between them, as "[fd00::2]:8500". The injector's
// CONSUL_HTTP_ADDR, $(HOST_IP):8500, and an OTel endpoint written
// http://$(HOST_IP):4318 read so once kubelet puts a node's IPv6 address
// in them. Read whole, as an address alone, it would have no
// port; any other text is returned as it is.
func Bracket(hostport string) string {
	if _, _, err := net.SplitHostPort(hostport); err == nil {
		return hostport
	}
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 {
		return hostport
	}
	host, port := hostport[:i], hostport[i+1:]
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is6() {
		return hostport
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
		return hostport
	}
	return net.JoinHostPort(host, port)
}
