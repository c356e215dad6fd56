"""The CLI answers at once: bad input is one line before torch is imported, mistyped names get
their near names, every flag has help and its default, `petl-bench config` lists every `--set`
key; the method registry knows every method without importing its module."""

import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

from petl_bench import registry
from petl_bench.cli import make_parser, no_default
from petl_bench.config import SECTION_CLASSES
from petl_bench.registry import get_method, method_names

from cli_calls import call

HEAVY = ("torch", "lightning", "open_clip", "torchvision", "petl_bench.run", "petl_bench.backbone")

# (argv, words the one error line must hold, words it must not hold). `{root}` is an existing folder.
RUN = ["run", "--dataset", "officehome", "--root", "{root}", "--model", "tiny"]
BAD_INPUTS = {
    "unknown-method": ([*RUN, "--method", "copo"], ["unknown method 'copo'", "did you mean coop"], ["zeroshot"]),
    "unknown-dataset": (
        ["run", "--method", "coop", "--dataset", "offichome", "--root", "{root}"],
        ["unknown dataset 'offichome'", "did you mean officehome"],
        ["terraincognita"],
    ),
    "missing-root": (
        ["run", "--method", "coop", "--dataset", "officehome", "--root", "{root}/absent"],
        ["dataset root not found", "absent"],
        [],
    ),
    "bad-split": (
        ["run", "--method", "coop", "--dataset", "minidomainnet", "--root", "{root}", "--split", "10pct"],
        ["unknown split '10pct' for minidomainnet", "did you mean 1pct"],
        [],
    ),
    "set-without-value": ([*RUN, "--method", "coop", "--set", "optim.lr"], ["expected section.key=value"], []),
    "unknown-set-key": (
        [*RUN, "--method", "coop", "--set", "train.epoch=3"],
        ["unknown key 'epoch' (did you mean train.epochs? valid: train.epochs, "],
        [],
    ),
    "unknown-method-key": (
        [*RUN, "--method", "coop", "--set", "method.n_ctxx=3"],
        ["unknown key 'n_ctxx'", "did you mean method.n_ctx?"],
        [],
    ),
    "bad-set-value": ([*RUN, "--method", "vpt", "--set", "method.depth=-1"], ["method.depth=-1: must be >= 0"], []),
    "unknown-command": (["rnu"], ["invalid choice: 'rnu'", "did you mean run?"], ["report"]),
    "unknown-config-method": (["config", "--method", "mapple"], ["unknown method 'mapple'", "did you mean maple"], []),
}

PROBE = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from petl_bench.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as stop:  # argparse's errors
                code = stop.code
        results.append([code, err.getvalue(), sorted(m for m in HEAVY if m in sys.modules)])
    print(json.dumps(results))
"""
).replace("HEAVY", repr(HEAVY))


def in_fresh_process(argvs: list[list[str]]) -> list:
    """[exit code, stderr, heavy modules imported so far] of each argv, run in turn in one new process."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_bad_inputs_are_one_line_before_torch_is_imported(tmp_path):
    argvs = [[a.replace("{root}", str(tmp_path)) for a in argv] for argv, _, _ in BAD_INPUTS.values()]
    for name, (code, err, heavy), (_, needles, absent) in zip(
        BAD_INPUTS, in_fresh_process(argvs), BAD_INPUTS.values(), strict=True
    ):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("petl-bench: error: "), (name, err)
        assert all(needle in lines[0] for needle in needles), (name, lines[0])
        assert not any(word in lines[0] for word in absent), (name, lines[0])  # the near names, not all
        assert heavy == [], (name, heavy)


def test_light_commands_import_no_model():
    ((methods, config),) = [in_fresh_process([["methods"], ["config"]])]
    assert methods[0] == 0 and methods[2] == []
    assert config[0] == 0 and config[2] == []


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    # `petl-bench methods | head -1`: the pipe is closed before the listing is written.
    command = [sys.executable, "-c", "import sys; from petl_bench.cli import main; sys.exit(main())", "methods"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and err == "", err


def test_config_results_and_the_method_configs_import_no_model():
    code = (
        "import sys, petl_bench.config, petl_bench.results, petl_bench.datamodules.catalog\n"
        "from petl_bench.registry import get_method, method_names\n"
        "configs = [get_method(name).config_cls() for name in method_names()]\n"
        f"print(len(configs), sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split(maxsplit=1) == [str(len(method_names())), "[]\n"], done.stderr


def test_a_name_with_no_near_name_lists_every_known_one():
    code, _, err = call(["config", "--method", "zzzz"])
    assert code == 2 and f"(known: {', '.join(method_names())})" in err


# -- help ------------------------------------------------------------------------------------------
def parsers(parser=None, path="petl-bench"):
    """(command path, parser) for the parser and every sub-command's, depth first."""
    parser = parser or make_parser()
    yield path, parser
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):  # a sub-command table
            for name, child in action.choices.items():
                yield from parsers(child, f"{path} {name}")


def test_every_flag_has_help_and_its_default():
    seen = 0
    for path, parser in parsers():
        for action in parser._actions:
            if action.dest in ("help", "command", "data_command"):
                continue
            seen += 1
            assert action.help, f"{path} {'/'.join(action.option_strings) or action.dest} has no help"
            if not (no_default(action.default) or action.required):
                shown = parser.formatter_class(path)._get_help_string(action)
                assert "default" in shown, (
                    f"{path} {'/'.join(action.option_strings)}: default {action.default!r} not shown"
                )
    assert seen > 40
    run_help = " ".join(dict(parsers())["petl-bench run"].format_help().split())
    assert "seeds the split draw and training (default: 0)" in run_help
    assert "results folder (default: results)" in run_help
    assert "petl-bench config [--method M]" in run_help


# -- petl-bench config ------------------------------------------------------------------------------
def config_rows(out: str) -> dict[str, list[str]]:
    """`--set` key -> the rest of its row (type, default, range)."""
    return {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}


@pytest.mark.parametrize("name", method_names())
def test_config_lists_every_field_of_a_method_with_default_and_range(name):
    code, out, _ = call(["config", "--method", name])
    assert code == 0
    rows = config_rows(out)
    config_cls = get_method(name).config_cls
    for f in dataclasses.fields(config_cls):
        row = " ".join(rows[f"method.{f.name}"])
        assert (repr(f.default) if isinstance(f.default, str) else str(f.default)) in row
        if "rule" in f.metadata:
            assert f.metadata["rule"].describe() in row
    for section, cls in SECTION_CLASSES.items():
        assert {f"{section}.{f.name}" for f in dataclasses.fields(cls)} <= set(rows)
    method_keys = {key for key in rows if key.startswith("method.")}
    assert method_keys == {f"method.{f.name}" for f in dataclasses.fields(config_cls)}


def test_config_without_a_method_covers_every_registered_method():
    code, out, _ = call(["config"])
    titles = [line for line in out.splitlines() if line and not line.startswith(" ")]
    named = {name for title in titles for name in title.partition(" (")[0].split(", ")}
    assert code == 0 and set(method_names()) <= named
    rows = config_rows(out)
    assert rows["optim.lr"] == ["float", "0.0035", ">", "0"]
    assert rows["data.dataset"][:2] == ["str", "'officehome'"]


def test_a_rule_reads_as_its_range():
    from petl_bench.config import Rule

    assert Rule(ge=0, lt=1).describe() == ">= 0, < 1"
    assert Rule(choices=("sum", "mean")).describe() == "one of sum, mean"
    assert Rule().describe() == ""


# -- random-init models -----------------------------------------------------------------------------
@pytest.mark.parametrize("weights, noted", [([], True), (["--pretrained", "{ckpt}"], False)])
def test_a_random_init_run_says_so_in_its_first_line(weights, noted, tmp_path, monkeypatch):
    from petl_bench import run

    ckpt = tmp_path / "tiny.pt"
    ckpt.write_bytes(b"")
    started = []

    def execute(cfg, **kwargs):  # the run itself is not what this test is about
        started.append(cfg)
        return {
            "run_name": cfg.run_name,
            "dataset": cfg.data.dataset,
            "split": cfg.data.split,
            "seed": 0,
            "trainable_params": 0,
            "accuracy": {"average": 1.0},
        }

    monkeypatch.setattr(run, "execute", execute)
    argv = [
        "run",
        "--method",
        "zeroshot",
        "--dataset",
        "folder",
        "--root",
        tmp_path,
        "--model",
        "tiny",
        "--out",
        tmp_path / "out",
        *[str(a).replace("{ckpt}", str(ckpt)) for a in weights],
    ]
    code, out, err = call(argv)
    assert code == 0 and len(started) == 1 and err == ""
    note = "note: tiny is randomly initialised (no --pretrained weights): its accuracy says nothing about the method"
    assert (out.splitlines()[0] == note) if noted else ("randomly initialised" not in out)


# -- the registry: declared without torch, the class imported on first use --------------------------
def test_every_declared_method_loads_the_class_it_declares():
    for name in method_names():
        entry = get_method(name)
        assert (
            entry.cls.method_name == name and entry.module_class == f"{entry.cls.__module__}:{entry.cls.__qualname__}"
        )
        assert entry.cls.shared == entry.shared and entry.cls.__doc__.strip().splitlines()[0] == entry.summary


CONFIG = """
from dataclasses import dataclass

from petl_bench.config import MethodConfig


@dataclass
class LazyConfig(MethodConfig):
    width: int = 3
"""

PLUGIN = '''
from petl_bench.module import PetlModule
from petl_bench.registry import register_method
from lazy_config import LazyConfig


@register_method("lazy-method", LazyConfig)
class Lazy(PetlModule):
    """A lazily imported method."""

    shared = {shared}
'''


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path holding `lazy_config.LazyConfig`, and a scratch copy of the registry."""
    registry.method_names()
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    (tmp_path / "lazy_config.py").write_text(CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("lazy_")]:
        del sys.modules[name]


def lazy_config():
    from lazy_config import LazyConfig

    return LazyConfig


def test_a_declared_method_imports_its_module_only_when_its_class_is_asked_for(plugin_dir):
    (plugin_dir / "lazy_plugin.py").write_text(PLUGIN.format(shared=True))
    registry.declare_method("lazy-method", lazy_config(), "lazy_plugin:Lazy", True, "A lazily imported method.")
    entry = get_method("lazy-method")
    assert "lazy_plugin" not in sys.modules and entry.config_cls is lazy_config()
    assert entry.cls.__name__ == "Lazy" and entry.cls.method_name == "lazy-method" and "lazy_plugin" in sys.modules


def test_a_class_that_contradicts_its_declaration_is_refused(plugin_dir):
    (plugin_dir / "lazy_plugin_st.py").write_text(PLUGIN.format(shared=False))
    registry.declare_method("lazy-method", lazy_config(), "lazy_plugin_st:Lazy", True, "A lazily imported method.")
    with pytest.raises(ValueError, match=r"says shared=False.*declaration says shared=True"):
        _ = get_method("lazy-method").cls


def test_a_class_that_contradicts_its_declared_vocabulary_is_refused(plugin_dir):
    (plugin_dir / "lazy_plugin_closed.py").write_text(PLUGIN.format(shared=True) + "    open_vocabulary = False\n")
    registry.declare_method("lazy-method", lazy_config(), "lazy_plugin_closed:Lazy", True, "A lazily imported method.")
    with pytest.raises(ValueError, match=r"open_vocabulary=False.*declaration says shared=True, open_vocabulary=True"):
        _ = get_method("lazy-method").cls


def test_a_declared_module_that_does_not_register_is_refused(plugin_dir):
    (plugin_dir / "lazy_plugin_none.py").write_text("")
    registry.declare_method("lazy-method", lazy_config(), "lazy_plugin_none:Lazy", True, "Nothing.")
    with pytest.raises(RuntimeError, match="lazy_plugin_none:Lazy is not registered by its module"):
        _ = get_method("lazy-method").cls


def test_a_second_declaration_of_a_name_is_refused(plugin_dir):
    with pytest.raises(ValueError, match=r"'coop' is already registered by petl_bench\.methods\.coop:CoOp"):
        registry.declare_method("coop", lazy_config(), "elsewhere:CoOp", False, "Another CoOp.")


def test_the_catalog_titles_are_the_readers():
    from petl_bench.datamodules.catalog import DATASETS, TITLES
    from petl_bench.datamodules.datasets import SPECS
    from petl_bench.datamodules.manifest import READERS

    assert {name: TITLES[name] for name in SPECS} == {name: spec.title for name, spec in SPECS.items()}
    assert set(DATASETS) == {*READERS, *SPECS} and set(TITLES) == set(DATASETS) - {"folder"}
