# Developer and CI entry points for ofav2_tf.
#
#   make setup         install system and Python dependencies (idempotent)
#   make test          the whole test suite with pytest (what CI runs)
#   make test-fast     the same without tests marked slow
#   make bazel-test    the fast tests through Bazel (offline, Debian's Bazel 4)
#   make update-build  regenerate BUILD after adding/removing modules or imports
#                      (`make build` is the same)
#   make check-build   fail if BUILD is stale (CI runs this)
#
# PYTHON is the interpreter that has requirements.txt installed; Bazel is
# pointed at the same one through PYTHON_BIN_PATH (third_party/python/).

PYTHON ?= python3
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

.PHONY: setup setup-apt setup-pip test test-fast bazel-test build update-build check-build clean

setup: setup-apt setup-pip

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

setup-pip:
	$(PYTHON) -m pip install -r requirements.txt

# The full suite, serially. On the project's 2-core machines TensorFlow
# already uses both cores inside one process, and a second pytest-xdist worker
# measured slower, not faster (a 67-test TF suite: 28-55 s serial against
# 38-82 s with -n 2, as each worker pays its own TF import and they fight over
# the cores). Pass PYTEST_ARGS="-n 2" to try it on a bigger machine.
test:
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
