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
    except Exception as err:  # noqa: BLE001 - a traceback is exactly what these tests forbid
        pytest.fail(f"petl-bench {' '.join(map(str, argv))}: raised {type(err).__name__}: {err} "
                    "instead of a one-line error")
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

# (id, argv after `run`-or-other, words the error line must hold). `{x}` are filled from `paths`.
CASES = [
    ("missing-root", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "folder",
                      "--root", "{tmp}/absent"], ["dataset root not found", "absent"]),
    ("not-officehome", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "officehome",
                        "--root", "{mini}"], ["not an Office-Home root", "Art", "Real World"]),
    ("officehome-classes", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "officehome",
                            "--root", "{folder}"], ["classes differ", "Alarm_Clock"]),
    ("not-minidomainnet", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "minidomainnet",
                           "--root", "{folder}"], ["not a MiniDomainNet root", "splits_mini"]),
    ("unknown-method", [*RUN, "--model", "tiny", "--method", "nope", "--dataset", "folder",
                        "--root", "{folder}"], ["unknown method 'nope'", "coop-mt", "zeroshot"]),
    ("unknown-split", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "officehome",
                       "--root", "{officehome}", "--split", "7pct"], ["unknown split '7pct'", "10pct"]),
    ("unknown-split-set", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "folder",
                           "--root", "{folder}", "--set", "data.split=many"], ["unknown split 'many'"]),
    ("too-many-shots", [*RUN, "--model", "tiny", "--method", "zeroshot", "--dataset", "folder",
                        "--root", "{folder}", "--split", "5shot"], ["5-shot", "has 3"]),
    ("unknown-set-key", [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder",
                         "--root", "{folder}", "--set", "train.epoch=1"], ["unknown key 'epoch'", "train.epochs"]),
    ("malformed-set", [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder",
                       "--root", "{folder}", "--set", "epochs=1"], ["expected section.key=value"]),
    ("bad-set-value", [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder",
                       "--root", "{folder}", "--set", "train.epochs=abc"], ["'abc' is not a valid int"]),
    ("unknown-model", [*RUN, "--model", "ViT-Q-99", "--method", "zeroshot", "--dataset", "folder",
                       "--root", "{folder}"], ["unknown model 'ViT-Q-99'"]),
    ("missing-weights-file", [*RUN, "--model", "tiny", "--pretrained", "{tmp}/absent.pt", "--method", "zeroshot",
                              "--dataset", "folder", "--root", "{folder}"], ["checkpoint file not found", "absent.pt"]),
    ("tiny-has-no-tags", [*RUN, "--model", "tiny", "--pretrained", "openai", "--method", "zeroshot",
                          "--dataset", "folder", "--root", "{folder}"], ["no pretrained tag 'openai'"]),
    ("default-weights-offline", [*RUN, "--method", "zeroshot", "--dataset", "folder", "--root", "{folder}"],
     ["ViT-B-16", "openai", "--pretrained"]),
    ("context-too-long", [*RUN, "--model", "tiny", "--method", "coop", "--dataset", "folder",
                          "--root", "{folder}", "--split", "2shot", "--set", "method.n_ctx=40"],
     ["context length 32"]),
    ("data-check-missing-root", ["data", "check", "--no-progress", "--dataset", "officehome",
                                 "--root", "{tmp}/absent"], ["dataset root not found"]),
    ("eval-missing-ckpt", ["eval", "--ckpt", "{tmp}/absent.ckpt"], ["checkpoint not found", "absent.ckpt"]),
    ("eval-not-a-checkpoint", ["eval", "--ckpt", "{garbage}"], ["is not a petl-bench checkpoint"]),
    ("garbage-weights-file", [*RUN, "--model", "tiny", "--pretrained", "{garbage}", "--method", "zeroshot",
                              "--dataset", "folder", "--root", "{folder}"], ["could not load weights"]),
]


@pytest.fixture
def paths(tmp_path, folder_root, officehome_root, minidomainnet_root, empty_weight_caches):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04not a checkpoint" * 16)
    return {"tmp": tmp_path, "folder": folder_root, "officehome": officehome_root,
            "mini": minidomainnet_root, "garbage": garbage}


@pytest.mark.parametrize("argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(capsys, paths, tmp_path, argv, needles):
    argv = [a.format(**paths) for a in argv]
    if argv[0] == "run":
        argv += ["--out", str(tmp_path / "out")]
    code, out, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, needles)
    assert not (tmp_path / "out" / "runs").exists() or not list((tmp_path / "out" / "runs").rglob("*.json"))


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--method", "zeroshot", "--dataset", "imagenet", "--root", "x"])
    assert info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


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
