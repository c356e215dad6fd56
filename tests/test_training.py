"""PetlModule training mechanics on the tiny random-init CLIP: what changes, the schedule, resuming."""

import json

import pytest
import torch
from petl_bench.methods.coop import CoOp, CoOpConfig, CoOpMT

from petl_bench.cli import main
from petl_bench.config import OptimConfig
from petl_bench.module import PetlModule, warmup_cosine


@pytest.mark.parametrize("method", [CoOp, CoOpMT])
def test_only_the_context_changes_after_a_few_sgd_steps(method, tiny_backbone, folder_data):
    torch.manual_seed(0)
    module = method(CoOpConfig(n_ctx=4), tiny_backbone, folder_data.tasks)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    params = module.apply_trainable()
    assert [n for n, p in module.named_parameters() if p.requires_grad] == ["ctx"]
    optimizer = torch.optim.SGD(params, lr=0.1)
    module.log = lambda *args, **kwargs: None  # no Trainer attached
    batch = next(iter(folder_data.train_dataloader()))[0]
    for _ in range(3):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        assert module.ctx.grad is not None and module.ctx.grad.abs().sum() > 0
        optimizer.step()
    changed = {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"ctx"}
    assert module.num_trainable == (1 if method is CoOpMT else 4) * 4 * 48


def test_shared_context_encodes_class_texts_once_per_step(tiny_backbone, folder_data, monkeypatch):
    module = CoOpMT(CoOpConfig(n_ctx=4), tiny_backbone, folder_data.tasks)
    module.log = lambda *args, **kwargs: None
    calls = []
    original = tiny_backbone.encode_text
    monkeypatch.setattr(tiny_backbone, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    batch = next(iter(folder_data.train_dataloader()))[0]
    assert len(batch) == 4
    module.training_step(batch, 0).backward()
    assert len(calls) == 1  # four tasks, same classes, one shared context


def test_warmup_then_cosine_schedule():
    factors = [warmup_cosine(step, warmup=4, total=12) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[8] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))


def test_reference_recipe_is_the_default():
    """The paper's SGD lr 0.0035; Dassl's momentum, weight decay and schedule as MaPLe configures it."""
    optim = OptimConfig()
    assert (optim.lr, optim.momentum, optim.weight_decay) == (0.0035, 0.9, 5e-4)
    assert (optim.schedule, optim.warmup_epochs, optim.warmup_lr) == ("dassl", 1, 1e-5)


def test_a_killed_run_resumes_from_its_last_epoch(folder_root, tiny_checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "results"
    argv = ["run", "--method", "coop-mt", "--dataset", "folder", "--root", str(folder_root), "--split",
            "2shot", "--model", "tiny", "--pretrained", str(tiny_checkpoint), "--out", str(out),
            "--no-progress", "--set", "data.num_workers=0", "--set", "train.epochs=3",
            "--set", "data.batch_size=8", "--set", "method.n_ctx=4"]
    started_at = []

    def die_in_second_epoch(self):
        started_at.append(self.current_epoch)
        if self.current_epoch == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(PetlModule, "on_train_epoch_start", die_in_second_epoch)
    with pytest.raises(RuntimeError, match="killed"):
        main(argv)
    work = out / "runs" / "folder" / "2shot" / "coop-mt-n_ctx4@tiny-tiny" / "seed0"
    assert (work / "checkpoints" / "last.ckpt").is_file()
    assert not work.with_suffix(".json").exists()  # no record for a run that did not finish

    started_at.clear()
    monkeypatch.setattr(PetlModule, "on_train_epoch_start", lambda self: started_at.append(self.current_epoch))
    assert main(argv) == 0
    assert started_at == [1, 2]  # epoch 0 came from the checkpoint
    assert json.loads(work.with_suffix(".json").read_text())["config"]["train"]["epochs"] == 3
