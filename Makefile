# Two commands on a fresh machine:  `make demo` (set up, train, evaluate, export, predict)
# and `make test` (set up, run the tests). Everything installs into .venv from this repo's files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?= -n 2 --dist worksteal -q --durations=10

.PHONY: setup toolchains test test-slow test-slurm demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-torch.txt requirements-test.txt \
    requirements-deploy.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-torch.txt -r requirements-test.txt \
	    -r requirements-deploy.txt
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

# Accelerator compilers for ahead-of-time compiles without the hardware
# (benchmarks/accelerators.py), each in its own directory: the CUDA 12 and 13 plugins
# cannot share a process. --no-deps: JAX itself comes from the venv.
TOOLCHAINS := tpu cuda12 cuda13
toolchains: $(foreach t,$(TOOLCHAINS),$(VENV)/toolchains/$(t)/.installed)

$(VENV)/toolchains/%/.installed: requirements-%.txt | setup
	rm -rf $(VENV)/toolchains/$*
	$(BIN)/pip install -q --no-deps --target $(VENV)/toolchains/$* -r requirements-$*.txt
	touch $@

test: setup toolchains
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup toolchains
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# The tests that submit jobs to a real SLURM cluster; start one first (as root, once):
# `bash .ci/slurm_cluster.sh`. One test at a time: the cluster has two CPUs, and a test's
# time limits should not include waiting for another test's job. EFFNETLITE_REQUIRE_SLURM=1:
# a missing cluster fails here instead of skipping.
test-slurm: setup
	EFFNETLITE_REQUIRE_SLURM=1 $(BIN)/python -m pytest -m slurm -q --durations=10

# The main job end to end on the offline demo task: train, evaluate (JAX and int8 TFLite),
# export, predict; after training, the run directory carries the config. Rerunning resumes
# the run in $(DEMO_DIR), or says it is finished.
demo: setup
	$(BIN)/python train.py --config=configs/demo.py --workdir=$(DEMO_DIR)
	$(BIN)/python eval.py --weights=$(DEMO_DIR) --output=$(DEMO_DIR)/eval.json
	$(BIN)/python scripts/export.py --weights=$(DEMO_DIR) \
	    --quantize=int8 --io=int8 --calibration_steps=500 --output=$(DEMO_DIR)/demo-int8.tflite
	$(BIN)/python eval.py --config=configs/demo.py --weights=$(DEMO_DIR)/demo-int8.tflite \
	    --output=$(DEMO_DIR)/eval-int8.json
	$(BIN)/python -c "import sys, effnetlite; effnetlite.configure_process(); \
	    from effnetlite.data.digits import write_example; \
	    print('wrote a', write_example(sys.argv[1]))" $(DEMO_DIR)/digit.png
	$(BIN)/python scripts/predict.py $(DEMO_DIR)/digit.png --weights=$(DEMO_DIR) --top=3
	$(BIN)/python scripts/tflite_predict.py -i $(DEMO_DIR)/digit.png -m $(DEMO_DIR)/demo-int8.tflite -k 3

clean:
	rm -rf $(VENV) $(DEMO_DIR)
