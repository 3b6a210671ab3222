# MeshKit build, test and checks. Tools (buf, protoc-gen-go, protoc-gen-go-grpc,
# staticcheck) are pinned in internal/tools/go.mod and run with `go tool`, so nothing
# needs installing beyond Go itself.
GO        ?= go
TOOL      := $(GO) tool -modfile=internal/tools/go.mod
FUZZTIME  ?= 10s
BENCHCOUNT?= 6

.PHONY: chaos all build cross test test-arm64 race check fmt-check vet staticcheck buf-lint buf-breaking tidy-check fixtures-check wasm-fixtures proto fuzz bench dev demo clean

all: build

## build: compile the meshkit binary into bin/
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/meshkit ./cmd/meshkit

## cross: the static binary for each supported platform: bin/meshkit-linux-{amd64,arm64}
cross:
	@set -e; for arch in amd64 arm64; do \
		echo "cross: linux/$$arch"; \
		GOOS=linux GOARCH=$$arch CGO_ENABLED=0 $(GO) build -trimpath -o bin/meshkit-linux-$$arch ./cmd/meshkit; \
	done

## test: the test suite (the README's and CI's test command); needs nothing but Go
test:
	$(GO) test ./...

## test-arm64: the trust, bundle and wasm tests (wazero's arm64 compiler included) built
## for linux/arm64 and run under Debian's qemu-user
QEMU_ARM64 ?= qemu-aarch64
test-arm64:
	@command -v $(QEMU_ARM64) >/dev/null || { echo "test-arm64: $(QEMU_ARM64) not found (apt-get install qemu-user)"; exit 1; }
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) test -count=1 -exec $(QEMU_ARM64) ./trust ./bundle ./wasm ./internal/wasmfixture

## race: the test suite under the race detector
race:
	$(GO) test -race ./...

## check: everything that must pass before a commit lands
check: fmt-check vet staticcheck buf-lint buf-breaking tidy-check fixtures-check cross race

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(TOOL) staticcheck ./...

buf-lint:
	$(TOOL) buf lint

## buf-breaking: schemas must stay wire- and JSON-compatible with the previous commit
buf-breaking:
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
		$(TOOL) buf breaking --against '.git#ref=HEAD~1'; \
	else echo "buf-breaking: no previous commit to compare with"; fi

## tidy-check: go.mod and go.sum (of the module and of the tools) must already be tidy
tidy-check:
	@for dir in . internal/tools; do \
		keep=$$(mktemp -d); cp $$dir/go.mod $$dir/go.sum $$keep/; \
		(cd $$dir && $(GO) mod tidy); \
		if ! cmp -s $$dir/go.mod $$keep/go.mod || ! cmp -s $$dir/go.sum $$keep/go.sum; then \
			echo "go mod tidy would change $$dir/go.mod or go.sum: run it and commit the result"; \
			cp $$keep/go.mod $$keep/go.sum $$dir/; rm -rf $$keep; exit 1; fi; \
		rm -rf $$keep; \
	done

## fixtures-check: the committed Wasm test modules are what wat2wasm makes of their text
## (the one check that needs wat2wasm: apt-get install wabt)
fixtures-check:
	MESHKIT_REQUIRE_WAT2WASM=1 $(GO) test -count=1 -run 'Match' ./internal/wasmfixture

## wasm-fixtures: rebuild the committed Wasm test modules from their WebAssembly text
wasm-fixtures:
	@command -v wat2wasm >/dev/null || { echo "wasm-fixtures: wat2wasm not found (apt-get install wabt)"; exit 1; }
	@set -e; for f in internal/wasmfixture/testdata/*.wat; do wat2wasm "$$f" -o "$${f%.wat}.wasm"; done

## proto: regenerate the Go code from proto/ (generated code is committed)
proto:
	$(TOOL) buf lint
	$(TOOL) buf generate

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test $$pkg -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME); \
		done; \
	done

## bench: every benchmark of the README's Measured table (trust and seed BENCHCOUNT runs each, for benchstat)
bench:
	$(GO) test ./trust -run '^$$' -bench . -benchmem -count $(BENCHCOUNT)
	$(GO) test ./seed -run '^$$' -bench . -benchtime 10x -count $(BENCHCOUNT)
	$(GO) test ./node -run '^$$' -bench Propagation -benchtime 20x -timeout 30m
	$(GO) test ./node -run '^$$' -bench WatchFanout -benchtime 20x
	$(GO) test ./cmd/meshkit -run '^$$' -bench AgentProcess -benchtime 5x
	$(GO) test ./wasm -run '^$$' -bench . -benchtime 3x
	$(GO) test ./content -run '^$$' -bench ArtifactSpread -benchtime 1x -count 3
	$(GO) test ./p2p -run '^$$' -bench Fetch64KiB -benchmem -count $(BENCHCOUNT)
	$(GO) test ./bundle -run '^$$' -bench ApplyDelta -benchmem -count $(BENCHCOUNT)

## chaos: the long chaos run of seeds on etcd (leaders killed and paused 100 times); its
## report, for the README, in chaos-report.json (the CI variant runs 6 iterations in make test)
CHAOS_ITERATIONS ?= 100
chaos:
	MESHKIT_CHAOS_ITERATIONS=$(CHAOS_ITERATIONS) MESHKIT_CHAOS_REPORT=$(CURDIR)/chaos-report.json \
		$(GO) test ./cmd/meshkit -run '^TestChaosSeedsOnEtcd$$' -count 1 -v -timeout 90m

## dev: the README's run command
dev:
	$(GO) run ./cmd/meshkit dev

## demo: the trust core end to end
demo:
	$(GO) run ./cmd/meshkit demo

clean:
	rm -rf bin
