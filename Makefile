# The workbook's two jobs, on a fresh machine:
#   make run    set up .venv, build data/mnist_rgb, train, generate (full on a GPU, small on a CPU)
#   make test   set up .venv with the test tools and run the tests: unit tests, then the four
#               notebooks under nbval in small mode (DDPM_SMALL=1: small numbers, same code)
# Offline? Point MNIST_DIR at a folder with the MNIST idx files (or a copy of mnist.zip):
#   make run MNIST_DIR=../shared/data/mnist
# On a GPU, RECIPE=fast trains the workbook's fast recipe (docs/BENCHMARKS.md):
#   make run RECIPE=fast

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MNIST_DIR ?=
RECIPE ?= assignment
DATA := data/mnist_rgb
CHECKPOINTS := checkpoints

# Evaluated when used, after set-up: 1 if PyTorch sees a CUDA GPU.
HAS_GPU = $(shell $(PY) -c "import torch; print(int(torch.cuda.is_available()))")
# On a CPU, a small run of the same commands: a narrower UNet, 200 steps of 64, 64 images with DDIM.
CPU_TRAIN_ARGS := --base_dim 32 --batch_size 64 --epochs 1 --max_steps 200 --sample_interval 100
CPU_GENERATE_ARGS := --num_images 64 --sampler ddim --sampling_steps 50
TRAIN_ARGS = $(if $(filter 1,$(HAS_GPU)),--recipe $(RECIPE),$(CPU_TRAIN_ARGS))
# On a GPU, sample all 10,000 images in one batch (1,000 on GPUs under 40 GiB): many times
# faster than the assignment's 64.
GPU_BATCH = $(shell $(PY) -c "import torch; \
  print(10000 if torch.cuda.get_device_properties(0).total_memory >= 40 * 2**30 else 1000)")
GENERATE_ARGS = $(if $(filter 1,$(HAS_GPU)),--batch_size $(GPU_BATCH),$(CPU_GENERATE_ARGS))
VISUALIZE_ARGS = $(if $(filter 1,$(HAS_GPU)),,--sampler ddim --sampling_steps 50)

.PHONY: run test setup setup-test setup-dev data train generate lint pin-notebooks clean

run: setup
	$(MAKE) data train generate

test: setup-test
	DDPM_SMALL=1 $(PY) -m pytest

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

setup: $(VENV)/bin/activate
	$(PY) -m pip install -e .

setup-test: $(VENV)/bin/activate
	$(PY) -m pip install -e ".[test]"

setup-dev: $(VENV)/bin/activate
	$(PY) -m pip install -e ".[dev]"

data:
	@if [ -d $(DATA) ]; then \
	  $(PY) -m ddpm_lib.data --out $(DATA) --check-only; \
	else \
	  $(PY) -m ddpm_lib.data --out $(DATA) $(if $(MNIST_DIR),--source local --local $(MNIST_DIR)); \
	fi

train:
	$(PY) -m ddpm_lib.train --data_path ./$(DATA) --checkpoint_dir ./$(CHECKPOINTS) \
	  --sample_dir ./samples $(TRAIN_ARGS) $(if $(wildcard $(CHECKPOINTS)/last.pt),--resume)

generate:
	$(PY) -m ddpm_lib.generate --checkpoint ./$(CHECKPOINTS)/best_model.pt \
	  --output_dir ./generated_images $(GENERATE_ARGS)
	$(PY) -m ddpm_lib.generate --checkpoint ./$(CHECKPOINTS)/best_model.pt \
	  --output_dir ./diffusion_visualization --mode visualize $(VISUALIZE_ARGS)

lint:
	$(PY) -m ruff check ddpm_lib tests tools bench

# After editing a notebook: rerun it in small mode, keep only the outputs nbval pins.
pin-notebooks: setup-dev
	DDPM_SMALL=1 $(PY) tools/pin_notebook_outputs.py notebooks/*.ipynb

clean:
	rm -rf $(CHECKPOINTS) samples generated_images diffusion_visualization runs
