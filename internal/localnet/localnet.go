// Package localnet picks loopback ports for ferry's demo, soak and tests.
package localnet

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// FreePorts returns n distinct loopback ports that were free for both TCP
// and UDP (Consul's serf uses both) at the time of the call. Another
// process may take one before the caller binds it; callers that can bind
// port 0 themselves should.
func FreePorts(n int) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n; tries++ {
		if tries > 100*n {
			return nil, errors.New("no free loopback ports")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			l.Close()
			continue
		}
		u.Close()
		held = append(held, l)
		ports = append(ports, port)
	}
	return ports, nil
}
