# petl-bench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# Synthetic shapes fill the frame: an 8% random crop (CoOp's default, kept for real data) misses them.
DEMO_RUN := --dataset officehome --root $(DEMO)/data --split 10pct --model tiny \
	--pretrained $(DEMO)/tiny-clip.pt --out $(DEMO)/results --set data.crop_scale_min=1.0

.PHONY: help install test demo clean-demo

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install:  ## create $(VENV) and install petl-bench with its pinned torch pair
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'

test:  ## run the test suite (the command README and CI use)
	$(BIN)/pytest

demo:  ## synthetic data + tiny CLIP, then zeroshot and coop-mt on it (CPU, a few minutes)
	@test -d $(DEMO)/data || $(BIN)/petl-bench data synth --out $(DEMO)/data --layout officehome --per-class 16
	@test -f $(DEMO)/tiny-clip.pt || $(BIN)/petl-bench data tiny-clip --data $(DEMO)/data --out $(DEMO)/tiny-clip.pt
	$(BIN)/petl-bench run --method zeroshot $(DEMO_RUN)
	$(BIN)/petl-bench run --method coop-mt $(DEMO_RUN) --set "method.ctx_init=a photo of a"

clean-demo:  ## remove the demo's data, model and results
	rm -rf $(DEMO)
