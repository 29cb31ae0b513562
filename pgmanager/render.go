package pgmanager

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Rendered is the text of a managed file and its content hash.
type Rendered struct {
	Text string
	Hash string
}

func rendered(text string) Rendered {
	sum := sha256.Sum256([]byte(text))
	return Rendered{Text: text, Hash: hex.EncodeToString(sum[:])}
}

// QuoteConfValue quotes a postgresql.conf value: single quotes, with ' and
// \ escaped by doubling, and line breaks refused by the caller's validation
// (they are escaped here too so the output is always one line per setting).
func QuoteConfValue(v string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for i := 0; i < len(v); i++ { // bytes, not runes: invalid UTF-8 passes through unchanged
		switch r := v[i]; r {
		case '\'':
			b.WriteString("''")
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case 0:
			// NUL cannot appear in a setting; drop it.
		default:
			b.WriteByte(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// RenderConf renders settings as postgresql.conf lines, sorted by name so
// the same settings always give the same text and hash.
func RenderConf(header string, settings map[string]string) Rendered {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(header), "\n") {
		if l != "" {
			fmt.Fprintf(&b, "# %s\n", l)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&b, "%s = %s\n", k, QuoteConfValue(settings[k]))
	}
	return rendered(b.String())
}

// QuoteConninfoValue quotes a libpq connection string value.
func QuoteConninfoValue(v string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// Conninfo renders a libpq key/value connection string, keys sorted.
func Conninfo(kv map[string]string) string {
	parts := make([]string, 0, len(kv))
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		if kv[k] == "" {
			continue
		}
		parts = append(parts, k+"="+QuoteConninfoValue(kv[k]))
	}
	return strings.Join(parts, " ")
}
