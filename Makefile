# Developer and CI entry points for ofav2_tf.
#
#   make demo          set everything up, then run the Fashion-MNIST demo (flags/demo_fashion_mnist.cfg)
#   make test          set everything up, then the whole test suite with pytest (what CI runs)
#   make setup         install system and Python dependencies (idempotent)
#   make test-fast     the same without tests marked slow
#   make bazel-test    the fast tests through Bazel (offline, Debian's Bazel 4)
#   make update-build  regenerate BUILD after adding/removing modules or imports
#                      (`make build` is the same)
#   make check-build   fail if BUILD is stale (CI runs this)
#
# PYTHON is the interpreter that has requirements.txt installed: by default a
# virtualenv in .venv that `make setup` creates (CI passes its own). Bazel is
# pointed at the same one through PYTHON_BIN_PATH (third_party/python/).

VENV := .venv
PYTHON ?= $(VENV)/bin/python
DEMO_FLAGS ?= flags/demo_fashion_mnist.cfg
DEMO_ARGS ?=
BAZEL ?= bazel
PYTEST_ARGS ?=
BAZEL_ARGS ?=

# Debian packages the project needs: Bazel for `make bazel-test`, and the
# Fashion-MNIST IDX files that the demo and the tests read offline.
APT_PACKAGES := bazel-bootstrap dataset-fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export PYTHON_BIN_PATH := $(shell command -v $(PYTHON))
# Headless plots in tests and the demo.
export MPLBACKEND ?= Agg

.PHONY: demo setup setup-apt setup-venv setup-pip test test-fast bazel-test build update-build check-build clean

setup: setup-apt setup-pip

# The main job: the whole OFAv2 schedule on Fashion-MNIST, offline (about 15
# minutes on 2 cores). Running it again resumes or reports the finished run.
demo: setup
	$(PYTHON) -m ofav2_tf.main --flagfile=$(DEMO_FLAGS) $(DEMO_ARGS)

# apt-get update is slow and needs the network, so it runs only when a package
# is actually missing.
setup-apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	else \
	  echo "Debian packages already installed: $(APT_PACKAGES)"; \
	fi

setup-venv:
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ] && [ ! -x "$(PYTHON)" ]; then \
	  echo "Creating the virtualenv $(VENV)"; python3 -m venv $(VENV); \
	fi

# Skipped when requirements.txt has not changed since the last install.
setup-pip: setup-venv
	@stamp="$$(dirname $$($(PYTHON) -c 'import sys; print(sys.executable)'))/.ofav2_requirements"; \
	if [ -f "$$stamp" ] && cmp -s requirements.txt "$$stamp"; then \
	  echo "Python packages already installed (requirements.txt unchanged)"; \
	else \
	  $(PYTHON) -m pip install -r requirements.txt && cp requirements.txt "$$stamp"; \
	fi

# The full suite, serially. On the project's 2-core machines TensorFlow
# already uses both cores inside one process, and a second pytest-xdist worker
# measured slower, not faster (a 67-test TF suite: 28-55 s serial against
# 38-82 s with -n 2, as each worker pays its own TF import and they fight over
# the cores). Pass PYTEST_ARGS="-n 2" to try it on a bigger machine.
test: setup
	$(PYTHON) -m pytest $(PYTEST_ARGS)

test-fast:
	$(PYTHON) -m pytest -m "not slow" $(PYTEST_ARGS)

bazel-test:
	$(BAZEL) test --config=fast $(BAZEL_ARGS) //...

build: update-build

update-build:
	$(PYTHON) tools/update_build.py

check-build:
	$(PYTHON) tools/update_build.py --check

clean:
	-$(BAZEL) clean
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf .pytest_cache
