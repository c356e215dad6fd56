"""Third-party chatter off by default (`petl_bench.quiet`): Lightning's banners, tips and warnings
about itself are dropped, its other messages and warnings show, and the README's Python API prints
our table, not Lightning's."""

import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from petl_bench.quiet import quiet_third_parties

ROOT = Path(__file__).resolve().parents[1]


def test_lightning_chatter_is_dropped_and_what_matters_still_shows(caplog, monkeypatch):
    import lightning as L

    quiet_third_parties()  # as importing petl_bench did: pytest resets the warning filters for each test
    caplog.set_level(logging.INFO, logger="lightning.pytorch")  # as Lightning sets it (a run sets WARNING)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)  # its start-up banner and tips
    rank_zero_info("Restored all states from the checkpoint at last.ckpt")
    said = [record.getMessage() for record in caplog.records]
    assert said == ["Restored all states from the checkpoint at last.ckpt"], said

    with warnings.catch_warnings(record=True) as caught:
        rank_zero_warn(
            "The number of training batches (1) is smaller than the logging interval "
            "Trainer(log_every_n_steps=50). Set a lower value for log_every_n_steps if you want to see logs"
        )
        rank_zero_warn("`ModelCheckpoint(monitor='val/acc')` could not find the monitored key in the returned metrics")
    assert [str(w.message) for w in caught] == [
        "`ModelCheckpoint(monitor='val/acc')` could not find the monitored key in the returned metrics"
    ]

    monkeypatch.setenv("PETL_BENCH_CHATTER", "1")  # everything kept: no filter added
    filters = list(warnings.filters)
    warnings.resetwarnings()
    quiet_third_parties()
    assert warnings.filters == []
    warnings.filters[:] = filters


@pytest.mark.slow
def test_the_readme_python_api_prints_our_table_and_no_chatter(folder_root, tiny_checkpoint, tmp_path):
    # Regression (issue 19): it printed Lightning's banners and tips, a logging-interval warning and each task's
    # accuracy under four "DataLoader" columns. Run as a user runs it: a fresh process.
    readme = (ROOT / "README.md").read_text()
    code = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    ours = {
        'ClipBackbone.from_pretrained("ViT-B-16", "openai")': (
            f'ClipBackbone.from_pretrained("tiny", "{tiny_checkpoint}")'
        ),
        'DataConfig("officehome", "~/data/OfficeHome", "10pct")': f'DataConfig("folder", "{folder_root}", "2shot", '
        "num_workers=0)",
    }
    for theirs, mine in ours.items():
        assert theirs in code
        code = code.replace(theirs, mine)
    env = {k: v for k, v in os.environ.items() if k != "PETL_BENCH_CHATTER"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    table = re.findall(r"^(\S.*?)\s+(\d+\.\d\d)$", done.stdout, re.M)
    assert [task for task, _ in table] == ["art", "clipart", "product", "real world", "average"]
    output = done.stdout + done.stderr
    for chatter in (
        "Test metric",
        "test/acc/",
        "GPU available",
        "TPU available",
        "Tip:",
        "logging interval",
        "LeafSpec",
        "tensorboardX",
    ):
        assert chatter not in output, chatter
