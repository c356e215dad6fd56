"""Bad input ends in exit status 2 and one line `petl-bench: error: ...` on stderr, never a traceback.

Also: `petl-bench methods`, and the method registry's own checks.
"""

import re
from dataclasses import dataclass

import pytest

from petl_bench import registry
from petl_bench.cli import main
from petl_bench.config import MethodConfig
from petl_bench.errors import UserError
from petl_bench.module import PetlModule


def run_cli(capsys, argv):
    try:
        code = main([str(a) for a in argv])
    except Exception as err:  # a traceback is exactly what these tests forbid
        pytest.fail(
            f"petl-bench {' '.join(map(str, argv))}: raised {type(err).__name__}: {err} instead of a one-line error"
        )
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, needles=()):
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("petl-bench: error: ")
    for needle in needles:
        assert needle in lines[0]


RUN = ["run", "--no-progress", "--set", "data.num_workers=0"]
TINY_COOP = [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder", "--root", "{folder}"]

# (id, argv after `run`-or-other, words the error line must hold). `{x}` are filled from `paths`.
CASES = [
    (
        "missing-root",
        [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "folder", "--root", "{tmp}/absent"],
        ["dataset root not found", "absent"],
    ),
    (
        "not-officehome",
        [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "officehome", "--root", "{mini}"],
        ["not an Office-Home root", "Art", "Real World"],
    ),
    (
        "officehome-classes",
        [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "officehome", "--root", "{folder}"],
        ["classes differ", "Alarm_Clock"],
    ),
    (
        "not-minidomainnet",
        [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "minidomainnet", "--root", "{folder}"],
        ["not a MiniDomainNet root", "splits_mini"],
    ),
    (
        "unknown-method",
        [*RUN, "--model", "tiny", "--method", "nope", "--dataset", "folder", "--root", "{folder}"],
        ["unknown method 'nope'", "coop-mt", "zeroshot"],
    ),
    (
        "unknown-split",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "zeroshot",
            "--dataset",
            "officehome",
            "--root",
            "{officehome}",
            "--split",
            "7pct",
        ],
        ["unknown split '7pct'", "10pct"],
    ),
    (
        "unknown-split-set",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
            "--set",
            "data.split=many",
        ],
        ["unknown split 'many'"],
    ),
    (
        "too-many-shots",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
            "--split",
            "5shot",
        ],
        ["5-shot", "has 3"],
    ),
    (
        "unknown-set-key",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "coop",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
            "--set",
            "train.epoch=1",
        ],
        ["unknown key 'epoch'", "train.epochs"],
    ),
    (
        "malformed-set",
        [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder", "--root", "{folder}", "--set", "epochs=1"],
        ["expected section.key=value"],
    ),
    (
        "bad-set-value",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "coop",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
            "--set",
            "train.epochs=abc",
        ],
        ["'abc' is not a valid int"],
    ),
    (
        "unknown-model",
        [*RUN, "--model", "ViT-Q-99", "--method", "zeroshot", "--dataset", "folder", "--root", "{folder}"],
        ["unknown model 'ViT-Q-99'"],
    ),
    (
        "missing-weights-file",
        [
            *RUN,
            "--model",
            "tiny",
            "--pretrained",
            "{tmp}/absent.pt",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
        ],
        ["checkpoint file not found", "absent.pt"],
    ),
    (
        "tiny-has-no-tags",
        [
            *RUN,
            "--model",
            "tiny",
            "--pretrained",
            "openai",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
        ],
        ["no pretrained tag 'openai'"],
    ),
    (
        "default-weights-offline",
        [*RUN, "--method", "zeroshot", "--dataset", "folder", "--root", "{folder}"],
        ["ViT-B-16", "openai", "--pretrained"],
    ),
    (
        "context-too-long",
        [
            *RUN,
            "--model",
            "tiny",
            "--method",
            "coop",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
            "--split",
            "2shot",
            "--set",
            "method.n_ctx=40",
        ],
        ["context length 32"],
    ),
    (
        "data-check-missing-root",
        ["data", "check", "--no-progress", "--dataset", "officehome", "--root", "{tmp}/absent"],
        ["dataset root not found"],
    ),
    ("eval-missing-ckpt", ["eval", "--ckpt", "{tmp}/absent.ckpt"], ["checkpoint not found", "absent.ckpt"]),
    ("eval-not-a-checkpoint", ["eval", "--ckpt", "{garbage}"], ["garbage.pt not loaded", "not a torch file"]),
    (
        "garbage-weights-file",
        [
            *RUN,
            "--model",
            "tiny",
            "--pretrained",
            "{garbage}",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
        ],
        ["could not load weights"],
    ),
    # Values out of range: one line before any work (config.validate).
    ("negative-lr", [*TINY_COOP, "--set", "optim.lr=-1"], ["optim.lr=-1.0: must be > 0"]),
    ("negative-seed", [*TINY_COOP, "--seed", "-1"], ["data.seed=-1: must be >= 0"]),
    ("zero-epochs", [*TINY_COOP, "--set", "train.epochs=0"], ["train.epochs=0: must be >= 1"]),
    ("negative-epochs", [*TINY_COOP, "--set", "train.epochs=-1"], ["train.epochs=-1: must be >= 1"]),
    ("zero-context", [*TINY_COOP, "--set", "method.n_ctx=0"], ["method.n_ctx=0: must be >= 1"]),
    ("unknown-precision", [*TINY_COOP, "--precision", "fp8"], ["train.precision='fp8'", "bf16-mixed"]),
    ("out-is-a-file", [*TINY_COOP, "--out", "{garbage}"], ["--out", "garbage.pt is a file, not a folder"]),
    # /sys refuses new folders even to root (where a chmod'ed folder would not).
    ("out-read-only", [*TINY_COOP, "--out", "/sys/petl-bench-out"], ["--out /sys/petl-bench-out", "cannot write"]),
    # Names that would climb out of --out, and files that would run code when loaded.
    (
        "run-name-climbs-out",
        [*TINY_COOP, "--set", "model.arch=../../../../../escape"],
        ["run name 'coop@../../../../../escape' cannot name a folder"],
    ),
    ("eval-crafted-checkpoint", ["eval", "--ckpt", "{crafted}"], ["crafted.ckpt not loaded", "could run code"]),
    (
        "crafted-weights-file",
        [
            *RUN,
            "--model",
            "tiny",
            "--pretrained",
            "{crafted}",
            "--method",
            "zeroshot",
            "--dataset",
            "folder",
            "--root",
            "{folder}",
        ],
        ["could not load weights", "could run code"],
    ),
    ("eval-params-gone", ["eval", "--ckpt", "{params_gone}"], ["params_gone.ckpt", "CoOpConfig has no field n_prompt"]),
    ("eval-params-out-of-range", ["eval", "--ckpt", "{params_bad}"], ["params_bad.ckpt", "method.n_ctx=-3"]),
]


@pytest.fixture
def paths(tmp_path, folder_root, officehome_root, minidomainnet_root, empty_weight_caches, crafted_file):
    import torch

    from petl_bench.runargs import build_run_config

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint" * 16)
    crafted = tmp_path / "crafted.ckpt"
    marker = crafted_file(crafted, state_dict={})
    # Checkpoints whose stored method params no longer fit CoOp's config.
    saved = build_run_config("coop", "folder", str(folder_root), "2shot", model="tiny", out=str(tmp_path / "out"))
    for name, params in (("params_gone", {"n_ctx": 4, "n_prompt": 2}), ("params_bad", {"n_ctx": -3})):
        torch.save(
            {"petl_bench": {"run_config": saved.to_dict(), "params": params}, "state_dict": {}},
            tmp_path / f"{name}.ckpt",
        )
    return {
        "tmp": tmp_path,
        "folder": folder_root,
        "officehome": officehome_root,
        "mini": minidomainnet_root,
        "garbage": garbage,
        "crafted": crafted,
        "marker": marker,
        "params_gone": tmp_path / "params_gone.ckpt",
        "params_bad": tmp_path / "params_bad.ckpt",
    }


@pytest.mark.parametrize("argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(capsys, paths, tmp_path, argv, needles):
    argv = [a.format(**paths) for a in argv]
    if argv[0] == "run" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, needles)
    assert not (tmp_path / "out" / "runs").exists() or not list((tmp_path / "out" / "runs").rglob("*.json"))
    assert not paths["marker"].exists()  # no crafted file ran its code


def test_a_crafted_checkpoint_in_a_results_tree_is_refused_not_run(capsys, paths, tmp_path):
    import torch

    argv = [a.format(**paths) for a in TINY_COOP] + ["--out", str(tmp_path / "out")]
    from petl_bench.results import root_folder

    last = tmp_path / "out/runs/folder" / root_folder(paths["folder"]) / "6shot/coop@tiny/seed0/checkpoints/last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(paths["crafted"].read_bytes())
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, [str(last), "could run code"])
    assert not paths["marker"].exists() and last.is_file()  # refused, and left for the user to judge
    torch.load(last, weights_only=False)  # as the resume used to load it
    assert paths["marker"].exists()


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--method", "zeroshot", "--dataset", "pacs", "--root", "x", "--if-locked", "later"])
    assert info.value.code == 2
    assert "invalid choice: 'later'" in capsys.readouterr().err


# -- methods and the registry ---------------------------------------------------------------------
def test_methods_command_lists_the_methods(capsys):
    code, out, err = run_cli(capsys, ["methods"])
    assert code == 0 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert list(rows) == registry.method_names()
    assert {"coop", "coop-mt", "zeroshot"} <= set(rows)
    assert "one per task" in rows["coop"]
    assert "shared by all tasks" in rows["coop-mt"]
    assert "a photo of a" in rows["zeroshot"]
    closed = [name for name, line in rows.items() if line.split()[2] == "closed"]
    assert closed == [name for name in rows if not registry.get_method(name).open_vocabulary]
    assert {"linear-probe", "tip-adapter-f"} <= set(closed) and "coop" not in closed


@dataclass
class ThrowawayConfig(MethodConfig):
    depth: int = 2


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as loaded, in a copy that the test may add to."""
    registry.method_names()  # load the plugins first
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def test_registry_rejects_a_duplicate_name(scratch_registry):
    zeroshot = registry.get_method("zeroshot").cls
    with pytest.raises(ValueError, match="'zeroshot' is already registered"):

        @registry.register_method("zeroshot", ThrowawayConfig)
        class Duplicate(PetlModule):
            """A second zeroshot."""

    assert registry.get_method("zeroshot").cls is zeroshot
    assert registry.get_method("zeroshot").config_cls is not ThrowawayConfig


@pytest.mark.parametrize("name", ["CoOp", "coop_mt", "-coop", "coop-", "", "1coop", "co op", "coop--mt", "coop.v2"])
def test_registry_rejects_a_bad_name(scratch_registry, name):
    with pytest.raises(ValueError, match="lower-case words"):
        registry.register_method(name, ThrowawayConfig)
    assert name not in registry._METHODS


def test_registry_rejects_a_config_that_is_not_a_method_config(scratch_registry):
    @dataclass
    class Plain:
        depth: int = 2

    for config in (Plain, dict):
        with pytest.raises(TypeError, match="MethodConfig"):
            registry.register_method("my-method", config)


def test_registry_rejects_a_method_config_subclass_without_dataclass(scratch_registry):
    # Regression (fixed): `dataclasses.is_dataclass` is true for any subclass of the MethodConfig dataclass,
    # so a config that forgot @dataclass is accepted; its fields are then invisible to `--set`,
    # `tag()` (run names) and `to_dict()` (the config hash).
    class Undecorated(MethodConfig):
        depth: int = 2

    with pytest.raises(TypeError, match="MethodConfig"):
        registry.register_method("my-method", Undecorated)


def test_registry_adds_a_good_method(scratch_registry):
    @registry.register_method("my-method2", ThrowawayConfig)
    class MyMethod(PetlModule):
        """My method: a test."""

    entry = registry.get_method("my-method2")
    assert (entry.cls, entry.config_cls, entry.summary) == (MyMethod, ThrowawayConfig, "My method: a test.")
    assert MyMethod.method_name == "my-method2"
    names = registry.method_names()
    assert "my-method2" in names and names == sorted(names)
    assert ThrowawayConfig(depth=5).tag() == "-depth5" and ThrowawayConfig().tag() == ""


def test_registry_unknown_method_lists_known():
    known = ", ".join(registry.method_names())
    with pytest.raises(UserError, match=re.escape(f"unknown method 'nope' (known: {known})")):
        registry.get_method("nope")
