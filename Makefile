# petl-bench: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# The demo's recipe is benchmarks/demo.yaml (README's "The demo"); these flags only say where its
# data, tiny CLIP and results live.
DEMO_SETS := --set data.root=$(DEMO)/data --set model.pretrained=$(DEMO)/tiny-clip.pt
# The tiny CLIP's matrices are too small for a second torch thread to pay: on 2 busy cores a
# pre-training step took 2.1 s of CPU with two threads, 0.09 s with one (benchmarks/tinyclip_step.py).
demo demo-sweep beyond-demo: export OMP_NUM_THREADS ?= 1

.PHONY: help install lint test test-fast demo clean-demo table1 table2 ablation kshot fewshot demo-sweep beyond beyond-demo report base2novel xd dg lodo

help:  ## list the targets
	@grep -E '^[a-z0-9][a-z0-9 -]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install:  ## create $(VENV) and install petl-bench with its pinned torch pair
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test,lint]'

# mypy sees the package as installed (methods/ and datamodules/ inside petl_bench, as pyproject's
# package-dir maps them) through a tree of links, since it cannot follow the editable install's hook.
MYPY_TREE := build/mypy-tree/petl_bench

lint:  ## ruff check, mypy, then ruff format --check (CI runs it before the tests)
	$(BIN)/ruff check .
	rm -rf $(MYPY_TREE) && mkdir -p $(MYPY_TREE)
	ln -s $(CURDIR)/petl_bench/* $(MYPY_TREE)/
	ln -s $(CURDIR)/methods $(MYPY_TREE)/methods
	ln -s $(CURDIR)/datamodules $(MYPY_TREE)/datamodules
	$(BIN)/mypy
	$(BIN)/ruff format --check .

test:  ## run the test suite (the command README and CI use)
	$(BIN)/pytest

test-fast:  ## the tests not marked slow (no end-to-end runs), for iterating
	$(BIN)/pytest -m "not slow"

demo:  ## synthetic data + tiny CLIP, then benchmarks/demo.yaml (zeroshot, coop-mt, mmap; 2 seeds) and its table (CPU)
	$(demo-data)
	$(BIN)/petl-bench sweep benchmarks/demo.yaml --out $(DEMO)/results $(DEMO_SETS) $(SWEEP_FLAGS)
	$(BIN)/python -m petl_bench.demo --out $(DEMO)/results $(DEMO_SETS)

clean-demo:  ## remove the demo's data, model and results
	rm -rf $(DEMO)

# -- benchmarks: sweep a grid (runs already done are skipped), then its table and figure -----------
RESULTS ?= results
SWEEP_FLAGS ?=  # e.g. --launcher slurm, --gpus 4, --rerun-stale
need-data = $(if $(DATA),,$(error make $@ needs the dataset folder: make $@ DATA=$(1)))
sweep = $(BIN)/petl-bench sweep benchmarks/$(1).yaml --out $(RESULTS) --set data.root=$(DATA) $(SWEEP_FLAGS)
# The HTML site of every grid swept under a results folder; it prints the path of its index.
report = $(BIN)/petl-bench report --out $(1)

table1:  ## Table 1 + Figure 1: Office-Home sweep (DATA=its folder), then table, plot and HTML report
	$(call need-data,~/data/OfficeHomeDataset_10072016)
	$(call sweep,table1)
	$(BIN)/petl-bench table table1 --out $(RESULTS)
	$(BIN)/petl-bench plot fig1 --grid table1 --out-dir $(RESULTS)
	$(call report,$(RESULTS))

table2:  ## Table 2: MiniDomainNet sweep (DATA=its folder), then the table and HTML report
	$(call need-data,~/data/domainnet)
	$(call sweep,table2)
	$(BIN)/petl-bench table table2 --out $(RESULTS)
	$(call report,$(RESULTS))

ablation:  ## Table 3 + Figure 4: MmAP ablations on Office-Home (DATA=its folder)
	$(call need-data,~/data/OfficeHomeDataset_10072016)
	$(call sweep,ablation)
	$(BIN)/petl-bench table ablation --out $(RESULTS)
	$(BIN)/petl-bench plot fig4 --grid ablation --out-dir $(RESULTS)
	$(call report,$(RESULTS))

kshot:  ## Figure 5: 1/3/6/12-shot Office-Home sweep (DATA=its folder), table and curves
	$(call need-data,~/data/OfficeHomeDataset_10072016)
	$(call sweep,kshot)
	$(BIN)/petl-bench table kshot --out $(RESULTS)
	$(BIN)/petl-bench plot fig5 --grid kshot --out-dir $(RESULTS)
	$(call report,$(RESULTS))

fewshot:  ## CoOp's benchmark: 11 datasets x 1-16 shots (DATA=their common root, CoOp's folders), table and curves
	$(call need-data,~/data/coop)
	$(call sweep,fewshot)
	$(BIN)/petl-bench table fewshot --out $(RESULTS)
	$(BIN)/petl-bench plot fewshot --grid fewshot --out-dir $(RESULTS)
	$(call report,$(RESULTS))

demo-sweep:  ## make demo's grid as a sweep, then its table, Figure 1 and HTML report (its runs, if done, are reused)
	$(demo-data)
	$(call demo-grid,demo,results)
	$(call report,$(DEMO)/results)

base2novel:  ## CoCoOp's base-to-novel protocol on CoOp's 11 datasets (DATA=their common folder): table, report
	$(call need-data,~/data)
	$(call sweep,base2novel)
	$(BIN)/petl-bench table base2novel --out $(RESULTS)
	$(call report,$(RESULTS))

xd dg:  ## CoCoOp's cross-dataset (xd) / domain-generalisation (dg) transfer from ImageNet (DATA=its folder): table, report
	$(call need-data,~/data/imagenet)
	$(call sweep,$@)
	$(BIN)/petl-bench table $@ --out $(RESULTS)
	$(call report,$(RESULTS))

lodo:  ## DomainBed's leave-one-domain-out on PACS, VLCS, Office-Home, TerraIncognita, DomainNet (DATA/{pacs,...}): table, report
	$(call need-data,~/data)
	$(call sweep,lodo)
	$(BIN)/petl-bench table lodo --out $(RESULTS)
	$(call report,$(RESULTS))

beyond:  ## Table 1's methods and the ones beyond the paper on Office-Home (DATA=its folder): table, fig1, report
	$(call need-data,~/data/OfficeHomeDataset_10072016)
	$(call sweep,beyond)
	$(BIN)/petl-bench table beyond --out $(RESULTS)
	$(BIN)/petl-bench plot fig1 --grid beyond --split 10pct --out-dir $(RESULTS)
	$(BIN)/petl-bench plot fig1 --grid beyond --split 20pct --out-dir $(RESULTS)
	$(call report,$(RESULTS))

beyond-demo:  ## benchmarks/beyond-demo.yaml: every method on synthetic data and the tiny CLIP (CPU, ~30 min)
	$(demo-data)
	$(call demo-grid,beyond-demo,beyond-results)
	$(call report,$(DEMO)/beyond-results)

report:  ## the HTML report of every grid swept under results/ (or RESULTS=DIR): its report/index.html
	$(call report,$(RESULTS))

# The demo's data and tiny CLIP (made once), and a grid swept, tabled and plotted on them. Each grid
# has its results folder ($(DEMO)/results for demo.yaml): grids that share a method under other
# settings would otherwise find each other's records stale.
define demo-data
	@test -d $(DEMO)/data || $(BIN)/petl-bench data synth --out $(DEMO)/data --layout officehome --per-class 16
	@test -f $(DEMO)/tiny-clip.pt || $(BIN)/petl-bench data tiny-clip --data $(DEMO)/data --out $(DEMO)/tiny-clip.pt
endef
demo-grid = $(BIN)/petl-bench sweep benchmarks/$(1).yaml --out $(DEMO)/$(2) $(DEMO_SETS) $(SWEEP_FLAGS) && \
	$(BIN)/petl-bench table $(1) --out $(DEMO)/$(2) $(DEMO_SETS) && \
	$(BIN)/petl-bench plot fig1 --grid $(1) --out-dir $(DEMO)/$(2) $(DEMO_SETS)
