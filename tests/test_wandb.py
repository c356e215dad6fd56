"""W&B logging: off by default and outside the config hash; `run --wandb` offline writes a `.wandb`
transaction log whose run header and summary hold the record's numbers. They are read back from that
file here: wandb 0.31 writes no wandb-summary.json offline and ships no reader for it."""

import json
import socket
import struct

import pytest
from wandb.proto import wandb_internal_pb2

from petl_bench.config import apply_overrides, root_folder
from petl_bench.errors import UserError
from petl_bench.runargs import parse_run_argv
from petl_bench.tracking import wandb_mode

from cli_calls import call

# The `.wandb` file: a 7-byte header (":W&B", magic, version), then LevelDB log blocks of 32 KiB whose
# chunks (crc32 uint32, length uint16, type uint8, data) carry serialized `Record`s, a record split
# over blocks as FIRST, MIDDLE..., LAST chunks. A block tail shorter than a chunk header is padding.
HEADER, BLOCK = 7, 32768
FULL, LAST = 1, 4


def wandb_records(path):
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0:  # zeros after the last record
            break
        parts.append(data[pos + HEADER : pos + HEADER + length])
        pos += HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def run_and_summary(path):
    """The run header and the summary as its updates leave it."""
    run, summary = None, {}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
        elif kind == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return run, summary


RUN = ["run", "--method", "coop-mt", "--dataset", "folder", "--root", "ROOT", "--split", "2shot", "--model", "tiny"]


def test_logging_changes_neither_hash_nor_run_name():
    plain = parse_run_argv(RUN[1:])
    logged = parse_run_argv([*RUN[1:], "--wandb"])
    assert (plain.logging.wandb, logged.logging.wandb) == (False, True)
    assert logged.sha256() == plain.sha256() and logged.run_name == plain.run_name
    assert "logging" not in logged.to_dict()
    apply_overrides(plain, ["logging.wandb=true", "logging.project=mine"])
    assert (plain.logging.wandb, plain.logging.project) == (True, "mine")
    with pytest.raises(UserError, match=r"unknown key 'entity' .*logging\.wandb, logging\.project"):
        apply_overrides(plain, ["logging.entity=me"])


@pytest.fixture
def wandb_env(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return monkeypatch


def test_offline_without_an_api_key(wandb_env):
    assert wandb_mode() == "offline"
    wandb_env.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"  # the user's choice stands


def test_online_only_with_a_key_and_a_reachable_server(wandb_env, tmp_path):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        wandb_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        (tmp_path / "netrc").write_text("machine 127.0.0.1 login user password KEY\n")
        assert wandb_mode() == "online"
    assert wandb_mode() == "offline"  # the server is gone: nothing to talk to


def test_offline_run_summary_holds_the_record(folder_root, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    termwarns = []  # wandb's own warning lines on stderr (once per process each: caught here, not in stderr)
    monkeypatch.setattr(wandb, "termwarn", lambda message, *args, **kwargs: termwarns.append(message))
    out = tmp_path / "results"
    argv = [*RUN, "--out", out, "--no-progress", "--set", "data.num_workers=0", "--set", "train.epochs=1", "--wandb"]
    argv[argv.index("ROOT")] = folder_root
    code, stdout, stderr = call(argv)
    assert code == 0, stderr
    record_file = out / "runs" / "folder" / root_folder(folder_root) / "2shot" / "coop-mt@tiny" / "seed0.json"
    record = json.loads(record_file.read_text())

    (log,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb")
    assert f"W&B run logged offline: upload it with `wandb sync {log.parent}`" in stdout
    run, summary = run_and_summary(log)
    assert (run.project, run.display_name, run.run_group, run.job_type) == (
        "petl-bench",
        "coop-mt@tiny-seed0",
        "folder/2shot",
        "coop-mt",
    )
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {k: config[k] for k in record["config"]} == record["config"]  # the resolved run config
    assert {task: summary[f"accuracy/{task}"] for task in record["accuracy"]} == record["accuracy"]
    assert set(record["accuracy"]) == {"art", "clipart", "product", "real world", "average"}
    assert summary["trainable_params"] == record["trainable_params"] == 768
    # Regression (issue 19): "The anonymous setting has no effect and will be removed" came before our hint.
    assert not [message for message in termwarns if "deprecat" in message or "will be removed" in message], termwarns


def test_a_refused_or_failing_wandb_never_loses_the_run(folder_root, tmp_path, monkeypatch, recwarn):
    # Regression (issue 18, item 11): a key the server refuses (401) failed every run with a traceback, no record.
    import wandb

    from petl_bench import tracking

    started = wandb.init
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    monkeypatch.setattr(tracking, "wandb_mode", lambda: "online")  # a key, a server that answers

    def refused_online(**kwargs):
        if kwargs.get("mode") == "online":
            raise wandb.errors.AuthenticationError("API key verification failed: 401 Unauthorized")
        return started(**kwargs)

    def run(out):
        argv = [
            *RUN,
            "--out",
            out,
            "--no-progress",
            "--set",
            "data.num_workers=0",
            "--set",
            "train.epochs=1",
            "--wandb",
        ]
        argv[argv.index("ROOT")] = folder_root
        recwarn.clear()
        code, stdout, stderr = call(argv)
        assert code == 0 and "Traceback" not in stderr, stderr
        assert next(out.glob("runs/folder/*/2shot/coop-mt@tiny/seed0.json"), out / "none").is_file()
        return stdout, [str(w.message) for w in recwarn if "W&B" in str(w.message)]

    monkeypatch.setattr(wandb, "init", refused_online)
    stdout, warned = run(tmp_path / "refused")
    assert warned == [
        "W&B failed (online: AuthenticationError: API key verification failed: 401 "
        "Unauthorized): logging this run offline instead"
    ]
    (log,) = (tmp_path / "wandb-dir" / "wandb").glob("offline-run-*/run-*.wandb")
    assert f"upload it with `wandb sync {log.parent}`" in stdout
    assert run_and_summary(log)[1]["trainable_params"] == 768

    def broken(**kwargs):
        raise wandb.errors.CommError("the W&B service did not start")

    monkeypatch.setattr(wandb, "init", broken)
    stdout, warned = run(tmp_path / "broken")
    assert warned == [
        "W&B failed (online: CommError: the W&B service did not start; offline: "
        "CommError: the W&B service did not start): this run goes on without it"
    ]
    assert "wandb sync" not in stdout

    teardown = wandb.teardown

    def full_disk():
        teardown()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(wandb, "init", refused_online)
    monkeypatch.setattr(wandb, "teardown", full_disk)  # closing the run fails after the record is written
    stdout, warned = run(tmp_path / "closing")
    assert warned[-1] == (
        "W&B failed to close the run (OSError: [Errno 28] No space left on device): its summary "
        "may lack the record's numbers"
    )
