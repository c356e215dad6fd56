"""Each method's own training recipe, as data: `benchmarks/recipes/<method>.yaml`.

`--recipe shared` (the default) trains every method under the MmAP paper's one recipe (the
sections' defaults); `--recipe paper` starts a method from its own paper's recipe, as its reference
code configures it. A recipe file:

    # CoOp (Zhou et al., IJCV 2022): its own recipe for the few-shot protocol of CoOp's benchmark.
    methods: [coop, coop-mt]      # the registered names it applies to
    source: KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16_ep50.yaml
    set: {optim.lr: 0.002, train.epochs: 200}   # `--set` keys, as on the command line
    shots: {1: {train.epochs: 50}}               # per shot count
    datasets: {imagenet: {train.epochs: 50}}     # per dataset; wins over shots

Precedence, lowest first: the sections' defaults, the recipe's `set`, its `shots[N]`, its
`datasets[D]`, a grid's `set`, the command line's `--set` (`runargs.build_run_config`). No torch.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig, apply_overrides
from .datamodules.catalog import COOP_DATASETS, DATASETS, parse_shots
from .errors import UserError

RECIPE_DIR = Path(str(importlib.resources.files("petl_bench.benchmarks"))) / "recipes"
RECIPE_KEYS = ("methods", "source", "set", "shots", "datasets")


@dataclasses.dataclass(frozen=True)
class Recipe:
    path: Path
    methods: tuple[str, ...]
    source: str  # the reference code's config file(s) the values come from
    values: dict[str, Any]  # `set`
    shots: dict[int, dict[str, Any]]
    datasets: dict[str, dict[str, Any]]

    def resolved(self, dataset: str, shots: int) -> dict[str, Any]:
        """The `--set` values for a run on `dataset` with `shots` per class, by the precedence above."""
        return {**self.values, **self.shots.get(shots, {}), **self.datasets.get(dataset, {})}

    def every_value(self) -> list[dict[str, Any]]:
        return [self.values, *self.shots.values(), *self.datasets.values()]


def set_items(values: dict[str, Any]) -> list[str]:
    """{`section.key`: value} -> [`section.key=value`], as `--set` takes them."""
    return [f"{key}={'none' if value is None else value}" for key, value in values.items()]


def paper_recipe(method: str) -> Recipe:
    """The recipe file that names `method`; a one-line UserError naming the methods that have one."""
    recipes = all_recipes()
    if method not in recipes:
        have = ", ".join(sorted(recipes)) or "none"
        raise UserError(f"--recipe paper: method {method!r} has no recipe in {RECIPE_DIR} (methods with one: {have})")
    return recipes[method]


def recipe_items(recipe: str, method: str, dataset: str, split: str) -> list[str]:
    """The `--set` items the recipe named `recipe` gives a run: none for `shared`; for `paper` the
    method's file's values for `dataset` and the split's shot count, its every key checked against
    the method's config (a bad one names the file)."""
    if recipe != "paper":
        return []
    found = paper_recipe(method)
    check_keys(found, method)
    return set_items(found.resolved(dataset, parse_shots(dataset, split)))


def check_keys(recipe: Recipe, method: str) -> None:
    """Every value of every part of the file is a `--set` key and value that `method`'s config takes."""
    from .registry import get_method

    probe = RunConfig(method=method, params=get_method(method).config_cls())
    for values in recipe.every_value():
        try:
            apply_overrides(probe, set_items(values))
        except UserError as err:
            raise UserError(f"recipe {recipe.path}: {err}") from None


def all_recipes() -> dict[str, Recipe]:
    """Method name -> its recipe, from every file in `RECIPE_DIR`; a name in two files is an error."""
    by_method: dict[str, Recipe] = {}
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        recipe = _load(path, path.stat().st_mtime_ns)
        for method in recipe.methods:
            if method in by_method:
                raise UserError(f"recipe {path}: method {method!r} is in {by_method[method].path} too")
            by_method[method] = recipe
    return by_method


@functools.lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int) -> Recipe:
    """One recipe file, its layout checked (its keys' values are checked per method: `check_keys`)."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"recipe {path}: cannot read it: {str(err).splitlines()[0]}") from None
    if not isinstance(spec, dict):
        raise UserError(f"recipe {path}: expected a mapping of {', '.join(RECIPE_KEYS)}")
    unknown = [key for key in spec if key not in RECIPE_KEYS]
    if unknown:
        raise UserError(f"recipe {path}: unknown key {unknown[0]!r} (known: {', '.join(RECIPE_KEYS)})")
    methods = spec.get("methods")
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise UserError(f"recipe {path}: methods: expected a list of method names, got {methods!r}")
    shots = _mapping(path, "shots", spec.get("shots"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shots):
        raise UserError(f"recipe {path}: shots: expected shot counts (integers >= 1) as keys, got {list(shots)}")
    datasets = _mapping(path, "datasets", spec.get("datasets"))
    known = (*DATASETS, *COOP_DATASETS)
    for name in datasets:
        if name not in known:
            raise UserError(f"recipe {path}: datasets: unknown dataset {name!r} (known: {', '.join(known)})")
    return Recipe(
        path=path,
        methods=tuple(methods),
        source=str(spec.get("source") or ""),
        values=_values(path, "set", spec.get("set")),
        shots={n: _values(path, f"shots: {n}", v) for n, v in shots.items()},
        datasets={name: _values(path, f"datasets: {name}", v) for name, v in datasets.items()},
    )


def _mapping(path: Path, where: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"recipe {path}: {where}: expected a mapping, got {value!r}")
    return value


def _values(path: Path, where: str, value) -> dict[str, Any]:
    """A mapping of `section.key: value`, scalars only."""
    values = _mapping(path, where, value)
    for key, item in values.items():
        if not isinstance(key, str) or isinstance(item, (list, dict)):
            raise UserError(f"recipe {path}: {where}: expected section.key: value, got {key!r}: {item!r}")
    return values


def describe(cfg: RunConfig) -> dict:
    """What the run record and the run's output say of its recipe: its name, and for `paper` the
    file, its source and the values it set (before a grid's or the command line's `--set`)."""
    if cfg.recipe != "paper":
        return {"name": cfg.recipe}
    found = paper_recipe(cfg.method)
    return {
        "name": cfg.recipe,
        "file": f"recipes/{found.path.name}",
        "source": found.source,
        "set": found.resolved(cfg.data.dataset, parse_shots(cfg.data.dataset, cfg.data.split)),
    }
