package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// allowedImports is docs/design.md's layering: which project packages each
// project package may import. Imports flow one way: internal/* are leaves;
// config may import each package it converts the file into; agent imports
// config and everything it wires; nothing but cmd/raftgres imports agent,
// and nothing imports cmd/raftgres. internal/testutil is for tests only.
var allowedImports = map[string][]string{
	"raftgres/internal/conf":     {},
	"raftgres/internal/boottime": {},
	"raftgres/internal/fsutil":   {},
	"raftgres/internal/testutil": {},
	"raftgres/internal/watchdog": {},         // the Linux watchdog driver; only the agent wires it
	"raftgres/internal/vip":      {leafConf}, // netlink and ARP for the VIP; its field errors

	"raftgres/raftstore": {leafConf, leafTestutil},
	"raftgres/pgmanager": {leafConf, leafBoottime, leafFsutil, leafTestutil, "raftgres/internal/vip"},
	"raftgres/backup":    {leafConf, leafFsutil},
	"raftgres/failover":  {leafConf, leafBoottime, leafTestutil, "raftgres/raftstore", "raftgres/pgmanager"},
	"raftgres/api":       {leafConf, "raftgres/raftstore", "raftgres/failover", "raftgres/internal/testutil"},

	// The file converts into each package's Config.
	"raftgres/config":         {leafConf, "raftgres/internal/vip", "raftgres/raftstore", "raftgres/pgmanager", "raftgres/backup", "raftgres/failover", "raftgres/api"},
	"raftgres/config/patroni": {"raftgres/config", "raftgres/raftstore", "raftgres/pgmanager"},
	"raftgres/secrets":        {leafConf, leafFsutil, "raftgres/pgmanager", "raftgres/api"},
	// Operator procedures through the REST API.
	"raftgres/ops": {"raftgres/api", "raftgres/failover", "raftgres/raftstore"},
	// The agent wires every component.
	"raftgres/agent": {leafConf, leafFsutil, leafTestutil, "raftgres/internal/watchdog", "raftgres/internal/vip", "raftgres/raftstore", "raftgres/pgmanager", "raftgres/backup", "raftgres/failover",
		"raftgres/api", "raftgres/config", "raftgres/secrets"},

	// failover: its timing formulas (Margin); boottime: the lease clock's drift;
	// config: the harness builds the agents' config files.
	"raftgres/integration": {leafConf, leafBoottime, leafTestutil, "raftgres/internal/vip", "raftgres/raftstore", "raftgres/failover", "raftgres/api", "raftgres/config"},
}

const (
	leafConf     = "raftgres/internal/conf"
	leafBoottime = "raftgres/internal/boottime"
	leafFsutil   = "raftgres/internal/fsutil"
	leafTestutil = "raftgres/internal/testutil"
)

func TestImportLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-f",
		`{{.ImportPath}}|{{join .Imports " "}}|{{join .TestImports " "}} {{join .XTestImports " "}}`, "raftgres/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(line, "|")
		pkg, imports, testImports := parts[0], strings.Fields(parts[1]), strings.Fields(parts[2])
		if slices.Contains(imports, leafTestutil) {
			t.Errorf("%s imports %s outside its tests", pkg, leafTestutil)
		}
		if pkg == "raftgres/cmd/raftgres" {
			continue // the CLI may use every package
		}
		allowed, known := allowedImports[pkg]
		if !known {
			t.Errorf("package %s is not in the layering table of docs/design.md (add it here and there)", pkg)
			continue
		}
		for _, imp := range append(imports, testImports...) {
			if strings.HasPrefix(imp, "raftgres/") && imp != pkg && !slices.Contains(allowed, imp) {
				t.Errorf("%s imports %s: not allowed by docs/design.md's layering", pkg, imp)
			}
		}
	}
}

// maxPackageShare is the most of the project's non-test Go lines one
// package may hold: past it, a package has grown more than one job.
const maxPackageShare = 0.25

// TestNoPackageOutgrowsItsShare counts the non-test lines of every package
// (go list's GoFiles) and fails when one holds over maxPackageShare of all.
func TestNoPackageOutgrowsItsShare(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}|{{.Dir}}|{{join .GoFiles " "}}`, "raftgres/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := map[string]int{}
	total := 0
	for _, row := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(row, "|")
		for _, f := range strings.Fields(parts[2]) {
			b, err := os.ReadFile(filepath.Join(parts[1], f))
			if err != nil {
				t.Fatal(err)
			}
			n := bytes.Count(b, []byte("\n"))
			lines[parts[0]] += n
			total += n
		}
	}
	for pkg, n := range lines {
		if share := float64(n) / float64(total); share > maxPackageShare {
			t.Errorf("%s holds %d of %d non-test lines (%.1f%%, over %.0f%%): split it by job", pkg, n, total, 100*share, 100*maxPackageShare)
		}
	}
}
