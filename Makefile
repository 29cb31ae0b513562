# raftgres build, test and demo targets. Go comes from /usr/local/go on the
# project's machines; PostgreSQL 15 from Debian's postgresql-15 package.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build test unit integration lint race bench demo clean

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/raftgres ./cmd/raftgres

# What CI runs: unit tests, then the multi-process and real-PostgreSQL suites.
test: unit integration

unit:
	$(GO) test -count=1 ./...

integration:
	RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -timeout 30m ./pgmanager/ ./integration/

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# The integration suite with agents built by the race detector (slower).
race:
	$(GO) test -race -count=1 ./...
	RAFTGRES_RACE=1 RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -timeout 45m ./integration/

bench:
	RAFTGRES_INTEGRATION=1 $(GO) test -count=1 -run '^$$' -bench . -benchtime=1x -timeout 30m ./integration/

# A real local 3-member cluster on 127.0.0.1; Ctrl-C stops it.
demo: build
	./bin/raftgres demo

clean:
	rm -rf bin
