# raftgres build, test and demo targets. Go comes from /usr/local/go on the
# project's machines; PostgreSQL 15 from Debian's postgresql-15 package.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
# The version the binary reports (raftgres version, /patroni, the metrics
# patroni_version and raftgres_build_info): git describe's when a vX.Y.Z tag
# is reachable (v0.1.0, or v0.1.0-12-gabc1234 after it), otherwise the file
# VERSION (the release being worked on) as a development build of this
# commit: v0.1.0-dev-gabc1234. A plain `go build` says "dev".
VERSION ?= $(shell git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null || \
	echo "v$$(cat VERSION)-dev$$(git describe --always --dirty 2>/dev/null | sed 's/^/-g/')")

.PHONY: build deps test unit integration chaos lint race bench demo clean sim package

# Installs what is missing (PostgreSQL 15, HAProxy, pgBackRest, iproute2,
# make, Patroni and etcd for the migration test) when run as root; otherwise
# prints the apt-get line to run. Silent when nothing is missing.
deps:
	@./scripts/install-deps.sh

# CGO_ENABLED=0: a static binary, as the packages ship, and one whose
# agent can clear its ambient capabilities in every thread (the vip:
# section; Go refuses that in a binary with cgo).
build:
	CGO_ENABLED=0 $(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/raftgres ./cmd/raftgres

# Release artifacts in DIST: a .deb and an .rpm (nfpm, a Go tool pinned in
# go.mod: packaging/nfpm.yaml), a tarball with the static binary, and
# SHA256SUMS. The binary reports VERSION; the packages carry it as dpkg and
# rpm sort it: v0.1.0 is 0.1.0, v0.1.0-12-gabc1234 (after the tag) is
# 0.1.0+12.gabc1234, v0.1.0-dev-gabc1234 (before it) is 0.1.0~dev.gabc1234.
# The unit is examples/systemd/raftgres.service with the binary in /usr/bin.
DIST ?= bin/dist
# packaging/nfpm.yaml names bin/package.
PKG_BUILD := bin/package
PKG_ARCH ?= $(shell $(GO) env GOARCH)
PKG_VERSION = $(shell echo '$(VERSION)' | sed -E 's/^v//; s/-dirty$$/.dirty/; s/-dev-g/~dev.g/; s/^([0-9]+[.][0-9]+[.][0-9]+)-([0-9]+)-g/\1+\2.g/')
TARBALL = raftgres-$(VERSION)-linux-$(PKG_ARCH)
# File times in the packages and the tarball: the commit's, so that a
# rebuild of one commit gives the same files (now, outside a git tree).
PKG_EPOCH = $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
package:
	rm -rf $(PKG_BUILD)
	rm -f $(DIST)/raftgres[_-]*.deb $(DIST)/raftgres-*.rpm $(DIST)/raftgres-*.tar.gz $(DIST)/SHA256SUMS
	mkdir -p $(PKG_BUILD)/$(TARBALL) $(DIST)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(PKG_ARCH) $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" \
		-o $(PKG_BUILD)/raftgres ./cmd/raftgres
	sed 's|/usr/local/bin/raftgres|/usr/bin/raftgres|' examples/systemd/raftgres.service > $(PKG_BUILD)/raftgres.service
	PKG_VERSION='$(PKG_VERSION)' PKG_ARCH=$(PKG_ARCH) SOURCE_DATE_EPOCH=$(PKG_EPOCH) \
		$(GO) tool nfpm package --config packaging/nfpm.yaml --packager deb --target $(DIST)/
	PKG_VERSION='$(PKG_VERSION)' PKG_ARCH=$(PKG_ARCH) SOURCE_DATE_EPOCH=$(PKG_EPOCH) \
		$(GO) tool nfpm package --config packaging/nfpm.yaml --packager rpm --target $(DIST)/
	cp $(PKG_BUILD)/raftgres $(PKG_BUILD)/$(TARBALL)/
	tar -C $(PKG_BUILD) --owner=0 --group=0 --numeric-owner --mtime=@$(PKG_EPOCH) --sort=name \
		-cf - $(TARBALL) | gzip -n > $(DIST)/$(TARBALL).tar.gz
	cd $(DIST) && sha256sum raftgres[_-]*.deb raftgres-*.rpm raftgres-*.tar.gz > SHA256SUMS
	@cd $(DIST) && ls -l raftgres[_-]*.deb raftgres-*.rpm raftgres-*.tar.gz SHA256SUMS

# What CI runs: unit tests, then the multi-process and real-PostgreSQL suites.
test: deps unit integration

unit:
	$(GO) test -count=1 ./...

integration: deps
	RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -timeout 45m ./pgmanager/ ./integration/

# The fault test: an append workload under random faults (kill -9,
# SIGSTOP, cut links, restarts, switchovers; edit-config/pause/resume during
# them), synchronous, asynchronous and quorum mode, CHAOS_MINUTES of faults each
# (make test runs 2). CHAOS_SEED=N replays a run's fault sequence. Prints the
# chaos lines (faults, figures, checks); the whole output is in CHAOS_LOG.
CHAOS_MINUTES ?= 10
CHAOS_LOG ?= bin/chaos.log
chaos: SHELL := /bin/bash
chaos: deps
	@mkdir -p $(dir $(CHAOS_LOG))
	@RAFTGRES_INTEGRATION=1 CHAOS_MINUTES=$(CHAOS_MINUTES) $(GO) test -count=1 -v \
		-timeout $$(awk 'BEGIN { print int(2 * ($(CHAOS_MINUTES) + 10)) }')m \
		-run '^TestChaos(Sync|Async|Quorum)$$' ./integration/ 2>&1 | tee $(CHAOS_LOG) | \
		sed -nu -e 's/^ *chaos_test.go:[0-9]*: //p' -e '/^\(--- \|ok \|FAIL\)/p'; \
	rc=$${PIPESTATUS[0]}; echo "full output: $(CHAOS_LOG)"; exit $$rc

# The deterministic simulator of the failover brain: the
# real supervisor and coordinator on a virtual clock against a simulated
# store and PostgreSQL under random faults and admin operations (edit-config,
# pause, switchover, manual failover, leave/join, recover after a lost
# majority): SIM_SCHEDULES schedules
# (50000) from SIM_SEED (1). One seed with its trace: SIM_SEED=N go test
# -run TestSimSweep -v ./failover/. Then the mutation proof: each patch in
# failover/testdata/sim/mutations re-introduces a review finding into a
# copy of the module, and the short sweep must find it (go test ./failover/
# runs a 2000-schedule sweep, without the mutations). SIM_MUTATION_BASE=dir
# applies the patches in dir (a proposed fix, say) to both the
# reference and the mutated copies first.
SIM_SCHEDULES ?= 50000
SIM_MUTATION_BASE ?=
SIM_SEED ?= 1
sim: SHELL := /bin/bash
sim:
	SIM_SCHEDULES=$(SIM_SCHEDULES) SIM_SEED=$(SIM_SEED) $(GO) test -count=1 -v -timeout 6h -run '^TestSimSweep$$' ./failover/ | \
		grep -v '^ \{8,\}[0-9]' | tail -n 40; exit $${PIPESTATUS[0]}
	SIM_MUTATIONS=1 SIM_MUTATION_BASE=$(SIM_MUTATION_BASE) $(GO) test -count=1 -v -timeout 1h -run '^TestSimMutations$$' ./failover/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The integration suite with agents built by the race detector (slower).
race: deps
	$(GO) test -race -count=1 ./...
	RAFTGRES_RACE=1 RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -timeout 45m ./integration/

# Benchmarks: every fault under pgbench load (tpcb-like, 4 clients,
# multi-host libpq) with a client writing every 20ms, sync and async side by
# side; quorum commit on 5 members (FIRST 1 against quorum k = 1 and 2 of 4
# standbys: a lost host, commit latency); Raft soak; commit gate cost.
# Prints min/median/max; figures in
# bin/bench-failover.json, agent logs in bin/bench-logs/. Settings:
# BENCH_RUNS (5), BENCH_IDLE_SECONDS (60), BENCH_SOAK_SECONDS (120),
# BENCH_ONLY (kill9,cut,switchover,rolling,raft,pgcrash,idle,quorum), BENCH_DCS, BENCH_RAFT,
# BENCH_PGBENCH_SCALE, BENCH_PGBENCH_RATE, BENCH_GATE_SECONDS.
bench: deps
	RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -run '^$$' -bench . -benchtime=1x -timeout 60m ./integration/

# A real local 3-member cluster on 127.0.0.1; Ctrl-C stops it.
demo: deps build
	./bin/raftgres demo

clean:
	rm -rf bin
