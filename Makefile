# pi0_ros developer entry points. `make demo` and `make test` set everything up
# on first use; later runs skip what is already done.
SHELL := /bin/bash
ROBOT ?= aloha
CHECKPOINT ?=
MODEL ?=
DEVICE ?=
DTYPE ?=
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast test-lerobot lint format clean distclean

setup:
	@scripts/setup.sh

demo: setup
	@scripts/with_env.sh python -m pi0_bringup.demo --robot "$(ROBOT)" $(if $(CHECKPOINT),--checkpoint "$(CHECKPOINT)") \
		$(if $(MODEL),--model "$(MODEL)") $(if $(DEVICE),--device "$(DEVICE)") $(if $(DTYPE),--dtype "$(DTYPE)")

test: setup
	@scripts/with_env.sh python -m pytest $(PYTEST_ARGS)

# Static checks (configured in pyproject.toml): lint, formatting, types of pi0_model and the pure runtime.
lint: setup
	@scripts/with_env.sh ruff check .
	@scripts/with_env.sh ruff format --check .
	@scripts/with_env.sh mypy

# Applies the formatter and the linter's safe fixes.
format: setup
	@scripts/with_env.sh ruff check --fix .
	@scripts/with_env.sh ruff format .

# Unit tests only: no ROS graph, no subprocesses.
test-fast: setup
	@scripts/with_env.sh python -m pytest -m "not ros and not slow" $(PYTEST_ARGS)

# bag_to_dataset's datasets read by LeRobot's real loaders (v3.0: lerobot 0.4.4, v2.1: 0.3.3), each in an
# environment of its own under $$PI0_LEROBOT_ENVS (first run: about 13 GB and 10 minutes; then ~1 minute).
test-lerobot: setup
	@PI0_LEROBOT_CHECK=1 scripts/with_env.sh python -m pytest tests/bags/test_to_dataset_lerobot.py $(PYTEST_ARGS)

clean:
	rm -rf build install log

distclean: clean
	rm -rf .venv
