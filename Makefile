# roar-nb: one command to set up and run the demo, one to set up and run the tests.
#   make demo   -> Python env in .venv/, Rust tracer built, kernel installed, demo notebook run headless, lineage printed
#   make test   -> the same set-up, the lints (cargo fmt/clippy, ruff, tsc), then every test (what CI runs)
#   make test-fast -> the set-up, then the fast tier: no Jupyter kernels, browser, strace corpus or S3
# Every step is idempotent; stamps keep re-runs fast.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
NATIVE  := roar_nb/_native/libroar_preload.so
DEMO    := build/demo
PYTEST_ARGS ?=

.PHONY: setup build demo test test-fast lint bench system-deps clean bytecode

setup: system-deps $(VENV)/.installed $(NATIVE) $(VENV)/.kernel bytecode

# Compile roar_nb ahead of time: with PYTHONDONTWRITEBYTECODE set (as on some machines),
# every `roar` invocation would otherwise recompile it, a third of `roar run true`.
bytecode: $(VENV)/.installed
	@$(BIN)/python -m compileall -q roar_nb roar.py

# Debian packages the project uses: graphviz (`dot`, inline SVG DAGs), strace (ground truth in tests),
# gcc and busybox-static (the fidelity corpus: C programs, a static binary), chromium (the
# JupyterLab panel's browser test drives Debian's headless chromium; nothing downloads a browser).
# Node.js/npm build the lab extension (pip install runs it through setup.py).
system-deps:
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: install Node.js >= 18 (it builds the JupyterLab extension)" >&2; exit 1; }
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	command -v strace >/dev/null 2>&1 || missing="$$missing strace"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	dpkg-query -W -f='$${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing="$$missing busybox-static"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || { echo "apt-get install$$missing failed" >&2; exit 1; }; \
	  else echo "warning: missing$$missing (install them with your package manager)" >&2; fi; \
	fi

# The lab extension's sources: a change re-runs the install, whose setup.py rebuilds the assets.
LABEXT_SRC := labextension/package.json labextension/package-lock.json labextension/tsconfig.json \
              $(filter-out labextension/src/_workerSource.ts,$(wildcard labextension/src/*.ts)) \
              $(wildcard labextension/style/* labextension/scripts/*)

$(VENV)/.installed: pyproject.toml setup.py $(LABEXT_SRC)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[notebook,demo,test]" --config-settings editable_mode=compat
	@touch $@

build: $(NATIVE)

# The native parts (Rust): preload tracer, ptrace tracer, S3 proxy. cargo decides what to rebuild; the copy lands inside the package.
$(NATIVE): FORCE
	@command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
	cd rust && cargo build --release --quiet
	@mkdir -p roar_nb/_native
	@cmp -s rust/target/release/libroar_preload.so $@ || cp rust/target/release/libroar_preload.so $@
	@cmp -s rust/target/release/roar-ptrace roar_nb/_native/roar-ptrace || cp rust/target/release/roar-ptrace roar_nb/_native/roar-ptrace
	@cmp -s rust/target/release/roar-proxy roar_nb/_native/roar-proxy || cp rust/target/release/roar-proxy roar_nb/_native/roar-proxy

$(VENV)/.kernel: $(VENV)/.installed $(NATIVE)
	$(BIN)/roar kernel install --sys-prefix >/dev/null
	@touch $@

demo: setup
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@cp notebooks/pipeline.ipynb notebooks/shell.ipynb $(DEMO)/
	@cd $(DEMO) && ../../$(BIN)/roar init -n >/dev/null
	cd $(DEMO) && ROAR_NOTEBOOK=pipeline.ipynb ../../$(BIN)/jupyter execute --kernel_name=roar --inplace pipeline.ipynb
	cd $(DEMO) && ROAR_NOTEBOOK=shell.ipynb ../../$(BIN)/jupyter execute --kernel_name=roar --inplace shell.ipynb
	@echo; echo "== lineage recorded by the notebooks' cells (roar dag --all --show-artifacts) =="
	@cd $(DEMO) && ../../$(BIN)/roar dag --all --show-artifacts
	@echo; echo "Explore it: cd $(DEMO) && ../../$(BIN)/roar show features.parquet; ../../$(BIN)/roar reproduce metrics.json"

# House rules as checks: Rust formatting and clippy (warnings are errors, workspace lints in
# rust/Cargo.toml), ruff (pyproject.toml; installed by the `test` extra), and the lab extension's
# types (node_modules and the generated worker source come from the install's npm build).
lint: setup
	@cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 || \
	  { command -v rustup >/dev/null 2>&1 && rustup component add rustfmt clippy; } || \
	  { echo "cargo fmt / cargo clippy not found: install the rustfmt and clippy components" >&2; exit 1; }
	cd rust && cargo fmt --check
	cd rust && cargo clippy --release --all-targets --quiet -- -D warnings
	$(BIN)/ruff check .
	cd labextension && node_modules/.bin/tsc --noEmit --composite false --incremental false -p .

test: lint
	cd rust && cargo test --release --quiet
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast tier: unit and integration tests without real kernels, the browser, the strace
# corpus or S3 (the `slow` marker, see tests/conftest.py).
test-fast: setup
	cd rust && cargo test --release --quiet
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python tests/benchmarks/bench_run.py

clean:
	rm -rf build roar_nb/_native $(VENV)/.installed $(VENV)/.kernel roar_nb/labextension labextension/lib

FORCE:
