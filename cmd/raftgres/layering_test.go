package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// allowedImports is DESIGN.md's layering: which project packages each
// project package may import. internal/conf is a leaf every package may use;
// internal/boottime (the lease clock) is a leaf for pgmanager and failover.
var allowedImports = map[string][]string{
	"raftgres/internal/conf":     {},
	"raftgres/internal/boottime": {},
	"raftgres/internal/watchdog": {}, // the Linux watchdog driver; only cmd wires it
	"raftgres/raftstore":         {"raftgres/internal/conf"},
	"raftgres/pgmanager":         {"raftgres/internal/conf", "raftgres/internal/boottime"},
	"raftgres/backup":            {"raftgres/internal/conf"},
	"raftgres/failover":          {"raftgres/internal/conf", "raftgres/internal/boottime", "raftgres/raftstore", "raftgres/pgmanager"},
	"raftgres/api":               {"raftgres/internal/conf", "raftgres/raftstore", "raftgres/failover"},
	"raftgres/integration": {"raftgres/internal/conf", "raftgres/internal/boottime", "raftgres/raftstore",
		"raftgres/failover", "raftgres/api"}, // failover: its timing formulas (Margin); boottime: the lease clock's drift
}

func TestImportLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-f",
		`{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "raftgres/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		if pkg == "raftgres/cmd/raftgres" {
			continue // cmd wires everything
		}
		allowed, known := allowedImports[pkg]
		if !known {
			t.Errorf("package %s is not in the layering table of DESIGN.md (add it here and there)", pkg)
			continue
		}
		for _, imp := range imports {
			if strings.HasPrefix(imp, "raftgres/") && !slices.Contains(allowed, imp) {
				t.Errorf("%s imports %s: not allowed by DESIGN.md's layering", pkg, imp)
			}
		}
	}
}
