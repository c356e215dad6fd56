"""RunConfig: `--set` overrides, run names and the config hash."""

import json

import pytest

from petl_bench.config import RunConfig, apply_overrides, root_folder
from petl_bench.datamodules.splits import split_path
from petl_bench.errors import UserError
from petl_bench.methods.coop import CoOpConfig
from petl_bench.methods.zeroshot import ZeroShotConfig
from petl_bench.results import record_path


def coop_mt(*overrides: str) -> RunConfig:
    return apply_overrides(RunConfig(method="coop-mt", params=CoOpConfig()), list(overrides))


# -- overrides ------------------------------------------------------------------------------------
def test_defaults():
    cfg = coop_mt()
    assert (cfg.model.arch, cfg.model.pretrained) == ("ViT-B-16", "openai")
    assert (cfg.train.epochs, cfg.optim.lr, cfg.train.fast_dev_run) == (5, 0.0035, False)
    assert (cfg.data.dataset, cfg.data.split, cfg.params.n_ctx) == ("officehome", "6shot", 16)


@pytest.mark.parametrize(
    "item, section, name, value",
    [
        ("train.epochs=2", "train", "epochs", 2),
        ("optim.lr=0.1", "optim", "lr", 0.1),
        ("optim.lr=1e-3", "optim", "lr", 0.001),
        ("optim.warmup_epochs=2", "optim", "warmup_epochs", 2),
        ("train.fast_dev_run=true", "train", "fast_dev_run", True),
        ("train.fast_dev_run=1", "train", "fast_dev_run", True),
        ("train.fast_dev_run=off", "train", "fast_dev_run", False),
        ("model.pretrained=none", "model", "pretrained", None),
        ("model.pretrained=null", "model", "pretrained", None),
        ("model.pretrained=laion2b_s34b_b88k", "model", "pretrained", "laion2b_s34b_b88k"),
        ("model.arch=tiny", "model", "arch", "tiny"),
        ("data.split=10pct", "data", "split", "10pct"),
        (" data.seed = 3 ", "data", "seed", 3),
        ("train.precision=bf16-mixed", "train", "precision", "bf16-mixed"),
        ("method.n_ctx=4", "params", "n_ctx", 4),
        ("params.n_ctx=8", "params", "n_ctx", 8),
        ("method.ctx_init=a photo of a", "params", "ctx_init", "a photo of a"),
    ],
)
def test_override_parses_the_field_type(item, section, name, value):
    cfg = coop_mt(item)
    got = getattr(getattr(cfg, section), name)
    assert got == value and type(got) is type(value)


def test_override_keeps_other_fields_and_last_wins():
    cfg = coop_mt("train.epochs=2", "method.n_ctx=4", "train.epochs=3")
    assert cfg.train.epochs == 3 and cfg.params.n_ctx == 4
    assert cfg.train.precision == "auto" and cfg.params.ctx_init == ""
    assert isinstance(cfg.params, CoOpConfig)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError) as info:
        coop_mt("train.epoch=2")
    message = str(info.value)
    assert "'epoch'" in message
    for key in ("train.epochs", "train.precision", "train.fast_dev_run"):
        assert key in message
    with pytest.raises(UserError, match=r"method\.n_ctx, method\.ctx_init"):
        coop_mt("method.nctx=2")


def test_method_without_fields():
    cfg = RunConfig(method="zeroshot", params=ZeroShotConfig())
    with pytest.raises(UserError, match=r"unknown key 'n_ctx' \(valid: none\)"):
        apply_overrides(cfg, ["method.n_ctx=4"])


@pytest.mark.parametrize("item", ["epochs=2", "train.epochs", "train=2", "foo.bar=1", ".epochs=2", "out.x=1"])
def test_malformed_item(item):
    with pytest.raises(UserError, match=r"expected section\.key=value"):
        coop_mt(item)


@pytest.mark.parametrize(
    "item", ["train.epochs=abc", "train.epochs=2.5", "optim.lr=fast", "train.fast_dev_run=maybe", "method.n_ctx="]
)
def test_bad_value(item):
    with pytest.raises(UserError, match="is not a valid"):
        coop_mt(item)


# -- run names ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, name",
    [
        ((), "coop-mt"),
        (("method.n_ctx=4",), "coop-mt-n_ctx4"),
        (("method.n_ctx=16",), "coop-mt"),
        (("model.arch=ViT-S-32",), "coop-mt@ViT-S-32"),
        (("model.arch=ViT-S-32", "method.n_ctx=8"), "coop-mt-n_ctx8@ViT-S-32"),
        (("model.pretrained=laion2b_s34b_b88k",), "coop-mt@ViT-B-16-laion2b_s34b_b88k"),
        (("model.pretrained=none",), "coop-mt@ViT-B-16"),
        (("model.arch=tiny", "model.pretrained=/w/tiny-clip.pt"), "coop-mt@tiny-tiny-clip"),
        (("optim.lr=0.1", "train.epochs=1", "data.seed=2"), "coop-mt"),
    ],
)
def test_run_name(overrides, name):
    assert coop_mt(*overrides).run_name == name


# -- config hash ----------------------------------------------------------------------------------
def test_sha256_ignores_where_results_go_and_loader_settings():
    base = coop_mt("data.root=/data/oh").sha256()
    assert len(base) == 64
    same = coop_mt("data.root=/data/oh", "data.num_workers=0", "data.eval_batch_size=7", "data.cache_dir=off")
    same.out = "/another/results"
    assert same.sha256() == base


def test_the_dataset_root_keys_the_hash_and_the_paths(tmp_path, monkeypatch):
    """Another root (a subset beside the full set) is another input: another hash, record and split
    file; two spellings of one folder (relative, `..`, a symlink) are one root."""
    full, subset = tmp_path / "full", tmp_path / "subset"
    full.mkdir(), subset.mkdir()
    (tmp_path / "link").symlink_to(full)
    monkeypatch.chdir(tmp_path)
    spellings = [str(full), "full", "subset/../full", str(tmp_path / "link")]
    configs = [coop_mt(f"data.root={root}") for root in spellings]
    assert len({cfg.sha256() for cfg in configs}) == 1
    assert len({record_path(cfg) for cfg in configs}) == 1
    assert len({split_path("out", "officehome", root, "6shot", 0) for root in spellings}) == 1
    other = coop_mt(f"data.root={subset}")
    assert other.sha256() != configs[0].sha256()
    assert record_path(other) != record_path(configs[0])
    assert split_path("out", "officehome", str(subset), "6shot", 0) != split_path(
        "out", "officehome", str(full), "6shot", 0
    )
    assert root_folder(str(full)).startswith("full-") and len(root_folder(str(full))) == len("full-") + 8
    # The 10pct / 6shot and batch 0 / 16 equivalences hold on a root, as before.
    assert coop_mt(f"data.root={full}", "data.split=10pct").sha256() == coop_mt(f"data.root={full}").sha256()
    assert coop_mt(f"data.root={full}", "data.batch_size=16").sha256() == configs[0].sha256()


@pytest.mark.parametrize(
    "item",
    [
        "optim.lr=0.1",
        "data.seed=1",
        "method.n_ctx=4",
        "data.split=12shot",
        "model.arch=tiny",
        "train.epochs=1",
        "data.batch_size=8",
        "model.quick_gelu=true",
        "model.quick_gelu=false",
    ],
)
def test_sha256_changes_with_what_decides_the_result(item):
    assert coop_mt(item).sha256() != coop_mt().sha256()


def test_to_dict_is_json_and_hashes_like_the_config():
    cfg = coop_mt("method.n_ctx=4", "optim.lr=0.01")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["method"] == "coop-mt" and d["params"] == {"n_ctx": 4, "ctx_init": ""}
    assert set(d) == {"method", "params", "data", "model", "optim", "train", "out", "recipe"}
    assert RunConfig.sha256_of(d) == cfg.sha256()


# -- values: every rule, in one place ---------------------------------------------------------------
def _breaking(rule):
    """A value the rule refuses."""
    if rule.choices is not None:
        return "no-such-choice"
    if rule.template:
        return "a photo without a slot"
    if rule.dataset:
        return "pacs+no-such-dataset"
    if rule.ge is not None:
        return rule.ge - 1
    if rule.gt is not None:
        return rule.gt
    return (rule.le if rule.le is not None else rule.lt) + 1


def _ruled_fields():
    import dataclasses

    from petl_bench.registry import get_method, method_names

    configs = {
        section: type(getattr(RunConfig(method="coop", params=CoOpConfig()), section))
        for section in ("data", "model", "optim", "train", "logging")
    }
    configs.update({f"method:{name}": get_method(name).config_cls for name in method_names()})
    return [
        (section, f.name, f.metadata["rule"])
        for section, cls in configs.items()
        for f in dataclasses.fields(cls)
        if "rule" in f.metadata
    ]


def test_every_numeric_field_of_the_run_sections_has_a_rule():
    import dataclasses

    from petl_bench.config import DataConfig, OptimConfig, TrainConfig

    for cls in (DataConfig, OptimConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float"):  # a new number takes its range: `x: int = rule(1, ge=0)`
                assert "rule" in f.metadata, f"{cls.__name__}.{f.name} has no rule"


@pytest.mark.parametrize("section, name, rule", _ruled_fields(), ids=lambda x: getattr(x, "__name__", str(x)))
def test_each_rule_refuses_a_value_outside_it_in_one_line(section, name, rule):
    from petl_bench.config import validate
    from petl_bench.registry import get_method

    method = section.partition(":")[2] or "coop"
    cfg = RunConfig(method=method, params=get_method(method).config_cls())
    validate(cfg)  # the defaults keep every rule
    target = "params" if section.startswith("method") else section
    setattr(getattr(cfg, target), name, _breaking(rule))
    prefix = "method" if target == "params" else target
    with pytest.raises(UserError, match=rf"^{prefix}\.{name}=.*: must be ") as info:
        validate(cfg)
    assert "\n" not in str(info.value)


def _float_fields():
    import dataclasses
    import typing

    from petl_bench.registry import get_method, method_names

    configs = {
        prefix: type(getattr(RunConfig(method="coop", params=CoOpConfig()), section))
        for prefix, section in (("data", "data"), ("optim", "optim"), ("train", "train"))
    }
    configs.update({f"method:{name}": get_method(name).config_cls for name in method_names()})
    return [
        (prefix, f.name)
        for prefix, cls in configs.items()
        for f in dataclasses.fields(cls)
        if typing.get_type_hints(cls)[f.name] is float
    ]


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "1e309"])
@pytest.mark.parametrize("section, name", _float_fields())
def test_every_float_field_refuses_a_non_finite_value_in_one_line(section, name, raw):
    # Regression (issue 18, item 8): `optim.lr=inf` or `1e309` passed its rule and trained into NaN.
    from petl_bench.config import validate
    from petl_bench.registry import get_method

    method = section.partition(":")[2] or "coop"
    prefix = "method" if section.startswith("method") else section
    cfg = apply_overrides(RunConfig(method=method, params=get_method(method).config_cls()), [f"{prefix}.{name}={raw}"])
    with pytest.raises(UserError, match=rf"^{prefix}\.{name}=-?(inf|nan): must be a finite number$"):
        validate(cfg)


def test_a_new_field_with_a_rule_is_checked_like_the_rest():
    import dataclasses

    from petl_bench.config import rule as ruled
    from petl_bench.config import validate

    @dataclasses.dataclass
    class NewConfig(CoOpConfig):
        temperature: float = ruled(1.0, gt=0)  # what another engineer adds: one line

    cfg = RunConfig(method="coop", params=NewConfig())
    assert validate(cfg) is cfg
    with pytest.raises(UserError, match=r"method\.temperature=-2\.0: must be > 0"):
        validate(apply_overrides(cfg, ["method.temperature=-2"]))


def test_tiny_gets_no_pretrained_weights_however_it_is_named():
    # Regression (fixed): `run --model tiny` had no weights, a grid's `model.arch: tiny` kept the default `openai`.
    from petl_bench.runargs import build_run_config

    typed = build_run_config("coop", "folder", "/d", model="tiny")
    from_grid = build_run_config("coop", "folder", "/d", overrides=["model.arch=tiny"])
    assert typed.model.pretrained is from_grid.model.pretrained is None
    assert (typed.run_name, typed.sha256()) == (from_grid.run_name, from_grid.sha256()) == ("coop@tiny", typed.sha256())
    assert build_run_config("coop", "folder", "/d").model.pretrained == "openai"
    named = build_run_config("coop", "folder", "/d", overrides=["model.arch=tiny", "model.pretrained=/w/t.pt"])
    assert named.model.pretrained == "/w/t.pt"
