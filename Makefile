# Two entry points for a fresh machine (see README.md):
#   make demo   installs everything, builds the built-in demo corpus and summarises it
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch 2.13.0 lies on this project's dev/CI disks; on a GPU machine pip takes the CUDA build.
TORCH  ?= torch==2.13.0
DEMO_OUT ?= demo-out
# Test processes (pytest-xdist): two, for the 2-core CI machine; each module's tests stay in one process.
TEST_WORKERS ?= 2

.PHONY: setup system-packages demo test clean

setup: system-packages $(VENV)/.installed

# ffmpeg (encode/mux and test fixtures) and chromium (HTML report and browser tests), from Debian.
system-packages:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,pose]"
	touch $@

demo: setup
	$(BIN)/vividhead build --demo --out $(DEMO_OUT)
	$(BIN)/vividhead inspect $(DEMO_OUT)

test: setup
	$(BIN)/python -m pytest -q -ra -n $(TEST_WORKERS) --dist loadscope tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info
