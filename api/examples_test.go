package api

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "../examples/prometheus/raftgres-rules.yml"
	rulesTestFile = "../examples/prometheus/raftgres-rules.test.yml" // promtool's unit tests of rulesFile
)

// ruleFile is the part of Prometheus's rule-file format the examples use.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

var fqNameRE = regexp.MustCompile(`fqName: "([a-z_:0-9]+)"`)

// exportedMetrics is every series name /metrics can serve from this package.
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	var descs []*prometheus.Desc
	ch := make(chan *prometheus.Desc, 128)
	newCollector(nil, "s", "n").Describe(ch)
	close(ch)
	for d := range ch {
		descs = append(descs, d)
	}
	out := map[string]bool{}
	for _, d := range descs {
		m := fqNameRE.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("no fqName in %s", d)
		}
		out[m[1]] = true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		out[failoverDurationMetric+suffix] = true
	}
	return out
}

// TestExampleAlertRules keeps examples/prometheus/raftgres-rules.yml valid
// without promtool: strict YAML in the rule-file shape, durations that
// parse, balanced expressions, and only metric names /metrics serves.
// With promtool on PATH it also runs `promtool check rules` and the rules'
// unit tests (`promtool test rules`).
func TestExampleAlertRules(t *testing.T) {
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	exported := exportedMetrics(t)
	metricRE := regexp.MustCompile(`\b(?:patroni|raftgres)_[a-z0-9_]+`)
	seen := map[string]bool{}
	n := 0
	for _, g := range rf.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("alert %q: empty or duplicate name", r.Alert)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: empty expr", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
				}
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("%s: severity %q is not critical, warning or info", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary annotation", r.Alert)
			}
			for _, pair := range []string{"()", "{}", "[]"} {
				if strings.Count(r.Expr, pair[:1]) != strings.Count(r.Expr, pair[1:]) {
					t.Errorf("%s: unbalanced %s in %q", r.Alert, pair, r.Expr)
				}
			}
			for _, name := range metricRE.FindAllString(r.Expr, -1) {
				if !exported[name] {
					t.Errorf("%s: uses %s, which /metrics does not serve", r.Alert, name)
				}
			}
		}
	}
	for _, want := range []string{"RaftgresNoPrimary", "RaftgresRaftNoLeader", "RaftgresFailoverSlow",
		"RaftgresSyncFailoverSlow", "RaftgresLeaseLow"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("%d rules", n)

	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Log("promtool not on PATH: YAML shape and metric names checked only")
		return
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
