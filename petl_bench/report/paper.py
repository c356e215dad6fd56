"""The paper's numbers and names: its Tables 1-3 as data, its column names for our methods, how it
names datasets and splits, and when its numbers are no yardstick for ours."""

from __future__ import annotations

import io
from collections.abc import Iterable
from importlib import resources

import pandas as pd

from ..datamodules.catalog import TITLES, dataset_parts, paper_split

# Our method names -> the paper's column names (Tables 1 and 2).
PAPER_NAMES = {
    "zeroshot": "ZS",
    "fullft": "FullFT-ST",
    "coop": "CoOp",
    "vpt": "VPT",
    "maple": "MaPLe",
    "fullft-mt": "FullFT-MT",
    "clip-adapter": "CLIP-Adapter",
    "bitfit": "BitFit",
    "coop-mt": "CoOp-MT",
    "vpt-mt": "VPT-MT",
    "maple-mt": "MaPLe-MT",
    "mmap": "MmAP",
}
# Column names of the methods beyond the paper (benchmarks/beyond.yaml), as their own papers write them.
BEYOND_NAMES = {
    "lora": "LoRA",
    "lora-mt": "LoRA-MT",
    "cocoop": "CoCoOp",
    "cocoop-mt": "CoCoOp-MT",
    "kgcoop": "KgCoOp",
    "kgcoop-mt": "KgCoOp-MT",
    "ivlp": "IVLP",
    "ivlp-mt": "IVLP-MT",
    "tip-adapter-f": "Tip-Adapter-F",
    "tip-adapter-f-mt": "Tip-Adapter-F-MT",
    "linear-probe": "Linear probe",
    "adaptformer": "AdaptFormer",
    "adaptformer-mt": "AdaptFormer-MT",
    "promptsrc": "PromptSRC",
    "promptsrc-mt": "PromptSRC-MT",
    "mma": "MMA",
    "mma-mt": "MMA-MT",
    "coprompt": "CoPrompt",
    "coprompt-mt": "CoPrompt-MT",
    "prograd": "ProGrad",
    "prograd-mt": "ProGrad-MT",
    "tcp": "TCP",
    "tcp-mt": "TCP-MT",
    "dept": "DePT",
    "dept-mt": "DePT-MT",
    "taskres": "TaskRes",
    "taskres-mt": "TaskRes-MT",
    "clap": "CLAP",
    "clap-mt": "CLAP-MT",
    "lpp": "LP++",
    "lpp-mt": "LP++-MT",
}
PAPER_MODEL = ("ViT-B-16", "openai")


def paper_results() -> pd.DataFrame:
    """The paper's Tables 1-3 as tidy rows: table (table1, table2, table3), dataset, split (Nshot),
    method (our registry name; Table 3: the ablation row label), task (a domain name as our readers
    give it, e.g. Office-Home "Real World" for the paper's "Real"; or "average"), mean, std (blank
    where the paper prints none).

    One correction: Table 1's 20% BitFit average is printed as 85.5 but its four task values average
    81.3 (every other average matches its row within 0.1), so the file holds 81.3.
    """
    text = resources.files("petl_bench").joinpath("data", "paper_results.csv").read_text()
    return pd.read_csv(io.StringIO(text), dtype={"mean": float, "std": float})


def paper_lookup(table: str) -> dict[tuple[str, str, str, str], tuple[float, float]]:
    """(dataset, split, method or label, task) -> (mean, std) for a grid's table kind. The k-shot
    grid borrows Tables 1-2, whose splits are k-shot splits too (Office-Home 10pct = 6shot)."""
    if table == "fewshot":  # CoOp's benchmark: the paper (MmAP's) has none of its numbers
        return {}
    paper = paper_results()
    paper = paper[paper.table == "table3"] if table == "ablation" else paper[paper.table != "table3"]
    return {(r.dataset, r.split, r.method, r.task): (r.mean, r.std) for r in paper.itertuples()}


def published_base2novel() -> pd.DataFrame:
    """Published base-to-novel results (`data/published_base2novel.csv`, `#` lines: what they are):
    method (our registry name), dataset (or "average": the paper's mean over its 11 datasets),
    base, novel, hm as printed, and the row's source."""
    return _published("published_base2novel.csv", ("base", "novel", "hm"))


TRANSFER_PROTOCOLS = ("xd", "dg")  # cross-dataset, domain generalisation: data/published_{protocol}.csv


def published_transfer(protocol: str) -> pd.DataFrame:
    """Published transfer results from ImageNet, cross-dataset (`xd`) or domain generalisation (`dg`)
    (`data/published_{protocol}.csv`, `#` lines: what they are): method (our registry name),
    dataset (the source `imagenet`, a target, or "average": the mean over the targets), accuracy
    as printed, and the row's source."""
    return _published(f"published_{protocol}.csv", ("accuracy",))


def _published(name: str, numbers: tuple[str, ...]) -> pd.DataFrame:
    text = resources.files("petl_bench").joinpath("data", name).read_text()
    return pd.read_csv(io.StringIO(text), comment="#", dtype=dict.fromkeys(numbers, float))


def harmonic_mean(base: float, novel: float) -> float:
    """CoCoOp's H: 2BN/(B+N) of base and novel accuracy (0 where both are 0)."""
    return 2 * base * novel / (base + novel) if base + novel else 0.0


def paper_params() -> dict[str, str]:
    """Method -> the paper's trainable parameters in M, as printed ("-" for none)."""
    from ..params import paper_figures  # params builds backbones: only the tables that show them import it

    return {name: figure.text for name, figure in paper_figures().items()}


def dataset_name(dataset: str) -> str:
    """`PACS`; datasets joined in one run: `PACS + VLCS`."""
    return " + ".join(TITLES.get(part, part) for part in dataset_parts(dataset))


DATASETS_NAMED = 3  # a heading names this many datasets at most; more are counted


def datasets_name(datasets: list[str]) -> str:
    """A grid's datasets in a heading: `PACS`, `PACS, VLCS`, or `11 datasets`."""
    if len(datasets) > DATASETS_NAMED:
        return f"{len(datasets)} datasets"
    return ", ".join(map(dataset_name, datasets))


def split_name(dataset: str, split: str) -> str:
    """`10pct (6shot)` where the paper has a name for the split, else `3shot`; a class subset's
    split (`16shot-base`, `catalog.split_folder`) reads `16shot base`."""
    split, _, classes = split.partition("-")
    if classes:
        return f"{split_name(dataset, split)} {classes}"
    paper = paper_split(dataset, split)
    return f"{paper} ({split})" if paper != split else split


def column_name(label: str) -> str:
    return PAPER_NAMES.get(label) or BEYOND_NAMES.get(label, label)


def off_paper_reasons(models: Iterable[tuple[str, str | None]], datasets: Iterable[str], synthetic: bool) -> list[str]:
    """Reasons the paper's numbers are no yardstick here: another model or weights, a custom folder
    of images, or synthetic data (as the records say). `models`: the runs' (model, pretrained)."""
    reasons = []
    other = [f"{m} with weights {p}" for m, p in dict.fromkeys(models) if (m, p) != PAPER_MODEL]
    if other:
        reasons.append(f"model {', '.join(other)} instead of ViT-B-16 with openai weights")
    if "folder" in datasets:
        reasons.append("a custom image folder, not the paper's dataset")
    if synthetic:
        reasons.append("synthetic images")
    return reasons
