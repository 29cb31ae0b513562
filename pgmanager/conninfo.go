package pgmanager

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// ParseConninfo parses a libpq connection string in key/value form
// (`host=a port='5 4' user=x`, values optionally single-quoted, backslash
// escapes) or URI form (postgres:// or postgresql://) into its keywords.
// It reads nothing else: no environment, service or password file.
func ParseConninfo(s string) (map[string]string, error) {
	if strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://") {
		return parseConninfoURI(s)
	}
	kv := map[string]string{}
	i := 0
	skipSpace := func() {
		for i < len(s) && isConninfoSpace(s[i]) {
			i++
		}
	}
	for {
		skipSpace()
		if i >= len(s) {
			return kv, nil
		}
		start := i
		for i < len(s) && s[i] != '=' && !isConninfoSpace(s[i]) {
			i++
		}
		key := s[start:i]
		skipSpace()
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("conninfo: missing \"=\" after %q", key)
		}
		if key == "" {
			return nil, errors.New("conninfo: empty keyword")
		}
		i++ // '='
		skipSpace()
		var b strings.Builder
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, fmt.Errorf("conninfo: unterminated quoted value for %q", key)
			}
		} else {
			for i < len(s) && !isConninfoSpace(s[i]) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
		}
		kv[key] = b.String()
	}
}

func isConninfoSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// parseConninfoURI takes the keywords raftgres needs from a URI: host,
// port, user, dbname and the query parameters.
func parseConninfoURI(s string) (map[string]string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("conninfo uri: %w", err)
	}
	kv := map[string]string{}
	for k, v := range u.Query() {
		if len(v) > 0 {
			kv[k] = v[len(v)-1]
		}
	}
	if u.User != nil && u.User.Username() != "" {
		kv["user"] = u.User.Username()
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		kv["dbname"] = db
	}
	if u.Host != "" {
		var hosts, ports []string
		for _, hp := range strings.Split(u.Host, ",") {
			h, p, err := net.SplitHostPort(hp)
			if err != nil {
				h, p = strings.Trim(hp, "[]"), ""
			}
			hosts, ports = append(hosts, h), append(ports, p)
		}
		kv["host"] = strings.Join(hosts, ",")
		if strings.Join(ports, "") != "" {
			kv["port"] = strings.Join(ports, ",")
		}
	}
	return kv, nil
}

// UpstreamAddr returns "host:port" of the one server conninfo names
// (hostaddr before host, port 5432 by default), or "" when it names none,
// several, or a Unix socket, or cannot be parsed.
func UpstreamAddr(conninfo string) string {
	kv, err := ParseConninfo(conninfo)
	if err != nil {
		return ""
	}
	host := kv["hostaddr"]
	if host == "" {
		host = kv["host"]
	}
	if host == "" || strings.Contains(host, ",") || strings.HasPrefix(host, "/") || strings.HasPrefix(host, "@") {
		return ""
	}
	port := kv["port"]
	if port == "" {
		port = "5432"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return ""
	}
	addr := net.JoinHostPort(host, strconv.Itoa(n))
	if h, _, err := net.SplitHostPort(addr); err != nil || h != host {
		return "" // e.g. a host with brackets: not an address
	}
	return addr
}
