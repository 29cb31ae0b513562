// Package conf holds the few value types that every package's configuration
// section shares: Secret (a password that never prints), Duration (seconds or
// a Go duration in YAML) and FieldError (a validation error that names its key
// so the config loader can point at the YAML path and line).
//
// It is a leaf: it imports nothing from the project, so every package may
// import it without bending the layering in docs/design.md.
package conf

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Redacted is what a Secret prints as, whatever it holds.
const Redacted = "***"

// Secret is a password or token. Its String, GoString, JSON and YAML forms are
// always Redacted, so no log line, %v or encoded struct can leak it. Call
// Reveal only where the value must really be used (a pgpass file, an
// Authorization header compare).
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

// String implements fmt.Stringer.
func (s Secret) String() string { return redact(s) }

// GoString implements fmt.GoStringer, so %#v does not leak either.
func (s Secret) GoString() string { return strconv.Quote(redact(s)) }

// Format implements fmt.Formatter so that every verb (%s, %v, %q, %x, %d…)
// prints the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprint(f, strconv.Quote(redact(s)))
	default:
		fmt.Fprint(f, redact(s))
	}
}

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redact(s)) }

// MarshalYAML implements yaml.Marshaler.
func (s Secret) MarshalYAML() (any, error) { return redact(s), nil }

// UnmarshalYAML reads a secret from a YAML scalar.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a string")
	}
	*s = Secret(n.Value)
	return nil
}

func redact(s Secret) string {
	if s == "" {
		return ""
	}
	return Redacted
}

// Duration is a time.Duration that YAML and JSON read either as a number of
// seconds (Patroni's style: `ttl: 30`) or as a Go duration string
// (`loop_wait: 500ms`). JSON (the REST API's /config) writes it in seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String implements fmt.Stringer.
func (d Duration) String() string { return time.Duration(d).String() }

// ParseDuration reads "30", "1.5" (seconds) or "500ms", "2s" (Go syntax).
func ParseDuration(v string) (Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, errors.New("must be a duration such as 10 (seconds) or 500ms")
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > float64(1<<62)/float64(time.Second) {
			return 0, fmt.Errorf("duration %q out of range", v)
		}
		return Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("must be a duration such as 10 (seconds) or 500ms, got %q", v)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q must not be negative", v)
	}
	return Duration(d), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a duration such as 10 (seconds) or 500ms")
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalJSON writes the duration in seconds, as the REST API's /config
// shows it: whole seconds as an integer, else a decimal.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)), nil
}

// MaxJSONSeconds bounds a duration read from JSON (the REST API's /config).
const MaxJSONSeconds = 86400

// UnmarshalJSON takes seconds (3, 0.3) or a string of seconds or of a Go
// duration ("300ms"), from 0 to MaxJSONSeconds, rounded to the
// millisecond.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		if v, err := time.ParseDuration(str); err == nil {
			return d.fromSeconds(v.Seconds()) // same range and rounding as a number
		}
		f, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return fmt.Errorf("%q is neither seconds nor a duration like 300ms", str)
		}
		return d.fromSeconds(f)
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s is not a number of seconds", b)
	}
	return d.fromSeconds(f)
}

func (d *Duration) fromSeconds(f float64) error {
	if math.IsNaN(f) || f < 0 || f > MaxJSONSeconds {
		return fmt.Errorf("%v seconds is out of range (0 to %d)", f, MaxJSONSeconds)
	}
	*d = Duration(time.Duration(f * float64(time.Second)).Round(time.Millisecond))
	return nil
}

// FieldError is a validation error about one configuration key. Path is
// relative to the section that validated it, dot separated ("tls.ca_file",
// "bootstrap_peers[1]"); the config loader prefixes the section's own path and
// adds the YAML line.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Errorf returns a *FieldError for path.
func Errorf(path, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// Prefix returns err with prefix joined in front of the path of every
// FieldError it holds (errors.Join trees included); other errors are wrapped
// in a FieldError at prefix. A path starting with "^" is already absolute
// (a section validating keys that live elsewhere) and is left alone; the
// loader strips the "^".
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Prefix(prefix, e))
		}
		return errors.Join(out...)
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		p := fe.Path
		switch {
		case strings.HasPrefix(p, "^"): // already a path from the top
		case prefix == "":
		case p == "" || strings.HasPrefix(p, "["):
			p = prefix + p
		default:
			p = prefix + "." + p
		}
		return &FieldError{Path: p, Err: fe.Err}
	}
	return &FieldError{Path: prefix, Err: err}
}
