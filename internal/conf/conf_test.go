package conf

import (
	"encoding/json"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestDurationJSON pins the REST API's /config form: seconds out, seconds
// or a Go duration in, 0 to 86400 s, rounded to the millisecond.
func TestDurationJSON(t *testing.T) {
	for d, want := range map[time.Duration]string{10 * time.Second: "10", 1500 * time.Millisecond: "1.5", 0: "0"} {
		if b, err := json.Marshal(Duration(d)); err != nil || string(b) != want {
			t.Errorf("marshal %s = %s, %v; want %s", d, b, err, want)
		}
	}
	for in, want := range map[string]time.Duration{`3`: 3 * time.Second, `0.3`: 300 * time.Millisecond, `"300ms"`: 300 * time.Millisecond,
		`"2"`: 2 * time.Second, `0.0004`: 0, `86400`: 24 * time.Hour} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("unmarshal %s = %s, %v; want %s", in, d, err, want)
		}
	}
	for in, want := range map[string]string{`86401`: "86401 seconds is out of range (0 to 86400)", `-1`: "-1 seconds is out of range (0 to 86400)",
		`"soon"`: `"soon" is neither seconds nor a duration like 300ms`, `true`: "true is not a number of seconds"} {
		var d Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil || err.Error() != want {
			t.Errorf("unmarshal %s: error %v, want %q", in, err, want)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	for in, want := range map[string]time.Duration{"30": 30 * time.Second, "1.5": 1500 * time.Millisecond, "500ms": 500 * time.Millisecond,
		"100000": 100000 * time.Second} {
		var d Duration
		if err := yaml.Unmarshal([]byte(in), &d); err != nil || d.D() != want {
			t.Errorf("yaml %s = %s, %v; want %s", in, d, err, want)
		}
	}
}
