# pm: build, checks, tests and a local cluster. `make help` lists the targets.
#
# Go flags come from the environment (GOFLAGS) as usual; the variables below
# can be overridden on the command line, e.g. `make test TEST_TIMEOUT=30m`.

GO           ?= go
# Tools pinned in tools/go.mod (buf, staticcheck), run without installing.
GOTOOL       := $(GO) tool -modfile=tools/go.mod
PKGS         ?= ./...
# Per test binary; CI allows 90 minutes for the whole run.
TEST_TIMEOUT ?= 20m
# Extra flags for go test, e.g. GOTESTFLAGS='-run TestFoo -v'.
GOTESTFLAGS  ?=
FUZZTIME     ?= 30s
# make image: the container image's name and tag.
IMAGE        ?= pm-node:dev
# Benchmarks: a regexp of their names, and -benchtime (a duration, or Nx for
# N iterations: BENCHTIME=20x is a quick check that they all run).
BENCH        ?= .
BENCHTIME    ?= 1s

# Go files under version control or about to be, minus generated code.
GOFILES = $(shell find . -name '*.go' -not -name '*.pb.go' \
	-not -path './.git/*' -not -path './bin/*' -not -path './.run/*' -not -path '*/testdata/*' \
	-not -path '*/node_modules/*')

.DEFAULT_GOAL := help
# Targets run their prerequisites in the order given, even under make -j.
.NOTPARALLEL:

.PHONY: help build generate generate-check lint test test-storm test-short fuzz bench \
	run stop services clean web web-deps web-check web-test compare image

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## build the commands into bin/
	$(GO) build -o bin/ ./cmd/...

image: ## build the pm-node container image IMAGE (default pm-node:dev) with docker; needs a docker daemon
	docker build -t $(IMAGE) .

generate: web-deps ## regenerate the proto/ Go code and the web/src/gen TypeScript with buf
	$(GOTOOL) buf generate
	$(GOTOOL) buf generate --template web/buf.gen.yaml

generate-check: generate ## fail when the committed generated code (proto/, web/src/gen/) is stale
	@$(call stale-check,proto/ web/src/gen/,generated code,make generate)

# stale-check(paths,what,fix): fail when git sees changed or untracked files
# under paths, i.e. the committed copy differs from what was just made.
define stale-check
	if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		echo "$(2): not a git work tree, check skipped"; exit 0; fi; \
	untracked=$$(git ls-files --others --exclude-standard -- $(1)); \
	if ! git diff --exit-code --stat -- $(1) || [ -n "$$untracked" ]; then \
		[ -z "$$untracked" ] || printf 'untracked files:\n%s\n' "$$untracked"; \
		echo "$(2) in $(1) is stale: run '$(3)' and commit the result"; \
		exit 1; fi
endef

# The browser board (web/): npm ci from the committed package-lock.json, once
# per change of the lock file.
WEB_DEPS := web/node_modules/.pm-installed

web-deps: $(WEB_DEPS)

$(WEB_DEPS): web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund
	@# One npm package ships Go files: a go.mod keeps node_modules out of pm's
	@# module (package.json's postinstall writes it too, where npm runs it).
	@printf '// Keeps npm packages that ship Go files out of the pm module.\nmodule ignored\n' >web/node_modules/go.mod
	@touch $@

web: web-deps ## build the board into web/dist (committed; pm-node embeds it)
	cd web && npm run build

web-check: web ## fail when the committed web/dist is not what the sources build
	@$(call stale-check,web/dist/,the built board,make web)

web-test: web-deps ## type-check and lint the board, then run its unit tests
	cd web && npm run check
	cd web && npm test

lint: ## go.mod tidy, gofmt, go vet, staticcheck, buf lint
	@# Both modules' go.mod and go.sum must be what go mod tidy makes: deploy/
	@# requires pm through a replace, so a change of pm's requirements needs
	@# 'cd deploy && go mod tidy' too.
	$(GO) mod tidy -diff
	cd deploy && $(GO) mod tidy -diff
	@echo "gofmt -l"; out=$$(gofmt -l $(GOFILES)); \
	if [ -n "$$out" ]; then printf 'not gofmt-ed (run gofmt -w):\n%s\n' "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GOTOOL) staticcheck $(PKGS)
	@# deploy/ is a module of its own (the Kubernetes, kustomize and compose
	@# dependencies of its tests stay out of pm's).
	cd deploy && $(GO) vet ./...
	cd deploy && $(GO) tool -modfile=../tools/go.mod staticcheck ./...
	$(GOTOOL) buf lint

test: services generate-check web-check lint web-test ## everything CI checks: services, generated code, the built board, lint, web and Go tests, the reconnect storm
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) $(PKGS)
	cd deploy && $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) ./...
	$(MAKE) --no-print-directory test-storm

# 2,000 SDK clients in one process exceed the race detector's goroutine
# limit: the storm (e2e/storm_test.go, build tag storm) runs without -race.
test-storm: services ## the reconnect storm: a node with 2,000 clients dies, the survivor absorbs them (no -race)
	$(GO) test -tags storm -count=1 -timeout $(TEST_TIMEOUT) -run '^TestReconnectStorm$$' ./e2e

test-short: services ## quick tests: -short, no race detector
	$(GO) test -short -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) $(PKGS)
	cd deploy && $(GO) test -short -count=1 -timeout $(TEST_TIMEOUT) $(GOTESTFLAGS) ./...

fuzz: ## run each Fuzz target for FUZZTIME (default 30s)
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

bench: services ## run benchmarks, never part of test (BENCH=regexp, BENCHTIME=1s or e.g. 20x)
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem -count=1 $(GOTESTFLAGS) $(PKGS)

compare: ## pm side by side with Centrifugo v6.9.1, each on 2 nodes (scripts/compare-centrifugo.sh: SCENARIOS, REPS, CENTRIFUGO_BIN, …)
	scripts/compare-centrifugo.sh

run: ## start a local cluster: NODES nodes behind HAProxy, demo data
	scripts/run.sh

stop: ## stop what make run started
	scripts/stop.sh

services: ## make sure PostgreSQL and Redis run (installs them as root)
	scripts/services.sh

clean: stop ## stop the local cluster, remove bin/, .run/ and coverage files
	rm -rf bin .run coverage.out coverage.html
