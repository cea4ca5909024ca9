# Two commands: `make demo` (everything, plus the portal on :8000) and `make test`.
# Every step is idempotent: running it again only does what is missing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
VAR := var
export DEBIAN_FRONTEND := noninteractive

APT_PACKAGES := slurmctld slurmd slurm-client slurmdbd slurmrestd slurm-wlm-jwt-plugin munge \
	mariadb-server mariadb-client postgresql postgresql-client redis-server redis-tools \
	python3-venv python3-dev curl ca-certificates chromium iproute2 debootstrap

.PHONY: help deps venv assets services stop-services cluster db setup test test-versions test-release \
	test-fresh-host test-docker lint demo stop seed

help:
	@echo "make demo   install everything, start cluster + services + portal on http://127.0.0.1:8000"
	@echo "make test   install everything, start cluster + services, run ruff and pytest"
	@echo "make stop   stop what demo started (portal, worker, beat, cluster); PostgreSQL and Redis stay up"
	@echo "make test-versions   contract + end-to-end tests against Slurm 24.11 and 26.05 (Debian roots, mini clusters),"
	@echo "                     then the whole local cluster on 24.11 with the release-sensitive tests"
	@echo "make test-fresh-host   a fresh Debian 13 host (debootstrap root, own network): make setup, then the"
	@echo "                        release-sensitive tests on its own Slurm 24.11 (FRESH_HOST=bookworm for Debian 12)"
	@echo "SLURM=24.11 or 26.05 (make demo, make test): run the local cluster on that release; make stop returns to the host's"
	@echo "make stop-services   stop the project's PostgreSQL and Redis too"
	@echo "make test-docker   build the Compose stack (docker/), start it on its own ports, test it end to end, remove it"

# ---- system packages (Debian 12 or 13), only when something is missing
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
		| grep -q 'install ok installed' || echo $$p; done); \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "apt: all packages present"; fi

# ---- Python virtualenv with pinned dependencies (redone when requirements.txt changes)
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

# ---- front-end libraries from npm (htmx, Chart.js), served as static files
assets: node_modules/.installed
node_modules/.installed: package.json package-lock.json | deps
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# ---- The project's own PostgreSQL (127.0.0.1:5433) and Redis (127.0.0.1:6390), data in var/,
# passwords generated in var/ (mode 600). Not the machine's servers: Debian's trust local
# connections and have no password, so every job could read the portal's data.
services: deps
	@scripts/services.sh start

# `make stop` leaves them running, like any database server; this stops them.
stop-services:
	@scripts/services.sh stop

# SLURM=24.11 (or 26.05, or 22.05 on a Debian 13 host) runs the local cluster from a Debian root
# of that release (cluster/release.py); without it, the host's own packages.
cluster: deps
	./cluster/ctl up $(if $(SLURM),--slurm $(SLURM))

db: venv assets services
	@# No statement or lock timeouts (settings' defaults are for web requests): a migration may
	@# rewrite a big table.
	PORTAL_DB_STATEMENT_TIMEOUT=0 PORTAL_DB_LOCK_TIMEOUT=0 $(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v 0

seed: db cluster
	$(PY) manage.py seed_demo >/dev/null

setup: deps venv assets services cluster db seed

lint: venv
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/pytest

# The gateway's contract against Slurm releases this host does not package: each from a Debian
# root built once and cached (cluster/roots.py: trixie = 24.11, sid = 26.05), run as a two-node
# mini cluster on ports of its own beside the local cluster (cluster/rootcluster.py).
OTHER_SLURM_SUITES ?= $(shell python3 cluster/release.py others)
OTHER_SLURM ?= $(shell python3 cluster/release.py other)
RELEASE_TESTS ?= tests/cluster/test_release_live.py tests/jobs/test_submit_contract.py \
	tests/recovery/test_crash_loop.py tests/teams/test_reconcile_batches.py tests/teams/test_budgets.py \
	tests/slurm_plugins/test_portal_down.py tests/jobs/test_tracking_controls.py tests/api/test_jobs_api.py \
	tests/jobs/test_views_templates.py

test-versions: setup
	@for suite in $(OTHER_SLURM_SUITES); do \
	  python3 cluster/roots.py build $$suite || exit 1; \
	  python3 cluster/rootcluster.py start $$suite || exit 1; \
	  rc=0; ( eval "$$(python3 cluster/rootcluster.py env $$suite)" && [ -n "$$SLURM_V11_REST_URL" ] \
	    && $(VENV)/bin/pytest -q -rs tests/slurm/test_rest_versions_live.py \
	       tests/slurm/test_other_versions_flow.py ) || rc=$$?; \
	  python3 cluster/rootcluster.py stop $$suite; \
	  [ $$rc -eq 0 ] || { echo "contract tests failed on $$suite"; exit $$rc; }; \
	done
	@# Then the whole local cluster (ten nodes, the hooks, users' plain commands) on another
	@# release from its Debian root, with the tests where releases differ most; then back to the
	@# host's own release (a stopped cluster starts on it), also when they fail.
	./cluster/ctl up --slurm $(OTHER_SLURM)
	@rc=0; $(VENV)/bin/pytest -q -rs $(RELEASE_TESTS) || rc=$$?; \
	  ./cluster/ctl down && ./cluster/ctl up >/dev/null; \
	  [ $$rc -eq 0 ] || echo "tests failed on the whole cluster on Slurm $(OTHER_SLURM)"; exit $$rc

# The release-sensitive tests alone, on whatever release the local cluster runs.
test-release: setup lint
	$(VENV)/bin/pytest -q -rs $(RELEASE_TESTS)

# The project's own `make setup` and test-release on a fresh Debian host of another release
# (cluster/freshhost.py: a cached debootstrap root, a clone of HEAD, downloads online, then
# everything else in namespaces of its own with loopback only). `FRESH_TARGETS=test` runs the
# whole suite there instead (about 16 minutes).
FRESH_HOST ?= trixie
FRESH_TARGETS ?= test-release
test-fresh-host:
	python3 cluster/freshhost.py run $(FRESH_HOST) $(FRESH_TARGETS)

# The Compose deployment (docker/): install and start dockerd (no bridge network) if needed, build
# the three images (base image by debootstrap, wheels made by the image's own Python, both cached under
# var/docker/), start the whole stack on its own ports and wait for every health check, run
# docker/tests through the containerised portal, then tear the stack and its volumes down.
# Its own project name, so it never touches a stack someone started with `stack.py up`.
test-docker: venv assets
# (`|| rc=$$?`: the recipe's shell stops at the first failure, and the stack must come down.)
	@export STACK_PROJECT=portalstack-test; started=$$(date +%s); rc=0; \
	  python3 docker/stack.py down --volumes; \
	  python3 docker/stack.py up || { python3 docker/stack.py compose logs --tail 40; rc=1; }; \
	  [ $$rc -ne 0 ] || $(VENV)/bin/pytest -p no:django -p no:cacheprovider -q -rs docker/tests || rc=$$?; \
	  python3 docker/stack.py down --volumes; \
	  echo "test-docker: exit $$rc, $$(( $$(date +%s) - started )) s wall time"; exit $$rc

demo: setup
	@scripts/portal.sh start
	@echo
	@echo "Portal:  http://127.0.0.1:8000   (admin pages at /admin/, health at /healthz)"
	@$(PY) manage.py seed_demo --skip-slurm | sed 's/^/  /'
	@echo "Stop everything with: make stop"

stop:
	@scripts/portal.sh stop
	./cluster/ctl down
