# vxflow: build, generate, test. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

# sudo resets PATH; Go's usual install location is appended so `sudo make demo` finds it.
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := $(CURDIR)/bin
K8S_BIN := $(BIN)/k8s
CONTROLLER_GEN_VERSION := v0.23.0
CNITOOL_VERSION := v1.3.1
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
CNITOOL := $(BIN)/cnitool-$(CNITOOL_VERSION)
export GOTOOLCHAIN := local
export KUBEBUILDER_ASSETS := $(K8S_BIN)
TEST_FLAGS ?=
COMMANDS := vxflow-controller vxflow-agent vxflow-cni vxflowctl

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN{FS=":.*##"} /^[a-zA-Z_-]+:.*##/{printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and RBAC under config/ from the Go markers.
	$(CONTROLLER_GEN) rbac:roleName=vxflow-controller crd paths="./api/..." paths="./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac/controller

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt over the tree.
	gofmt -s -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: verify
verify: manifests generate ## Regenerate and fail when generated files or go.mod are stale.
	$(GO) mod tidy
	@test -z "$$(gofmt -s -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -s -l $$(git ls-files '*.go'); exit 1; }
	@git diff --exit-code -- api config go.mod go.sum || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }

##@ Build

.PHONY: build
build: ## Build the four binaries into bin/.
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(COMMANDS))

.PHONY: control-plane
control-plane: ## Build kube-apiserver, etcd, kubectl and kube-proxy into bin/k8s (skipped when cached).
	hack/build-control-plane.sh $(K8S_BIN)

##@ Test

.PHONY: test
test: control-plane cnitool verify vet build ## Everything: unit, envtest, (as root) real OVS/nftables/CNI tests, then the e2e lab suite.
	hack/test.sh $(TEST_FLAGS)
	hack/e2e.sh

.PHONY: test-go
test-go: control-plane cnitool ## The Go tests only (unit, envtest, real OVS/nftables/CNI as root), without the lab.
	hack/test.sh $(TEST_FLAGS)

.PHONY: test-unit
test-unit: ## Pure tests only (no control plane, no root).
	$(GO) test -race ./internal/... ./api/...

.PHONY: update-golden
update-golden: ## Refresh golden files of the renderers.
	$(GO) test ./internal/render/... -update

.PHONY: bench
bench: control-plane ## Run the benchmarks.
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: e2e
e2e: control-plane build ## End-to-end suite on the netns lab (root): prints N passed, N failed.
	hack/e2e.sh

##@ Demo

.PHONY: demo
demo: control-plane build ## Bring up the demo (see README) and leave it running.
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Remove everything the demo made.
	hack/demo.sh down

##@ Tools

$(CONTROLLER_GEN):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $@

$(CNITOOL):
	@mkdir -p $(BIN)
	GOBIN=$(BIN) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)
	mv $(BIN)/cnitool $@

.PHONY: cnitool
cnitool: $(CNITOOL) ## Build the upstream CNI client used by the CNI tests.
