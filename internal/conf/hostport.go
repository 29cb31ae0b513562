package conf

import (
	"fmt"
	"net"
	"strconv"
)

// CheckHostPort validates a host:port; with allowAny an empty or
// unspecified host (listen on all interfaces) is accepted.
func CheckHostPort(addr string, allowAny bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("must be host:port, got %q", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port must be 1-65535, got %q", port)
	}
	ip := net.ParseIP(host)
	if host == "" || ip != nil && ip.IsUnspecified() {
		if !allowAny {
			return fmt.Errorf("needs a host that peers can reach, got %q", addr)
		}
		return nil
	}
	if ip == nil && !validHostname(host) {
		return fmt.Errorf("bad host %q", host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) == 0 || len(h) > 253 || h[0] == '-' || h[0] == '.' {
		return false
	}
	for _, r := range h {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
		default:
			return false
		}
	}
	return true
}
