# invitegate — run `make help` for the targets.

GO      ?= go
PKGS    := ./...
BIN     := bin
# Each fuzz target runs this long inside `make test` (CI) and `make fuzz`.
FUZZTIME ?= 20s

define fuzz
	$(GO) test ./internal/email -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(1)
	$(GO) test ./internal/http -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(1)
endef

.DEFAULT_GOAL := help

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## run the service on an embedded Redis (miniredis) and MongoDB-wire server (FerretDB/SQLite in ./.data)
	$(GO) run ./cmd/invitegate-dev serve

.PHONY: test
test: ## gofmt check, vet, every test with the race detector (needs redis-server, nginx, promtool), the allocation budget without it, then each fuzz target for FUZZTIME
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -run 'AllocationBudget' ./internal/http
	$(call fuzz,$(FUZZTIME))

.PHONY: test-unit
test-unit: ## the developer's loop, well under a minute: every test that needs no server (go test -short: miniredis and in-process fakes, fuzz seeds; no redis-server, FerretDB, nginx, chromium or child processes)
	$(GO) test -short $(PKGS)

.PHONY: bench
bench: ## the viral-spike benchmark: floor, service (K=1, K=16), MongoDB-only baseline, fixed rates, ack=replica against its control (INVITEGATE_BENCH_ONLY=replica for that alone); one table (about 15 minutes; needs redis-server)
	INVITEGATE_BENCH=full $(GO) test -count=1 -timeout 60m -run '^TestViralSpike$$' -v ./internal/bench

.PHONY: build
build: ## build the production binaries into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/invitegate ./cmd/invitectl

.PHONY: up
up: ## the production-like stack with Docker: MongoDB (replica set), Redis (AOF) with a replica and three Sentinels, 2 API replicas, nginx, Prometheus, Grafana, Mailpit
	docker compose up -d --build

.PHONY: down
down: ## stop the Docker stack (volumes are kept; `docker compose down -v` drops them)
	docker compose down

.PHONY: reseed
reseed: ## rebuild Redis counters from MongoDB under live traffic: make reseed CODE=twitter-reg1 (no CODE: every code)
	$(GO) run ./cmd/invitectl reseed $(if $(CODE),$(CODE),--all)

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (make fuzz FUZZTIME=10m for a longer hunt)
	$(call fuzz,$(FUZZTIME))

.PHONY: clean
clean: ## remove binaries and the make-run data directory
	rm -rf $(BIN) .data
