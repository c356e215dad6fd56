"""Which weights a model gets and how they are loaded: an open_clip tag or a local file, found in the
local caches first, downloaded only when a source answers, and read as tensors only; and which
activation (QuickGELU or GELU) they were trained with, told from the weights and the tag, never
from a file's name (`trained_with_quick_gelu`).

open_clip keeps this apart from the model too (`open_clip/pretrained.py`); `ClipBackbone.from_pretrained`
builds the model and calls `resolve_weights` and `load_weights`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from pathlib import Path

import open_clip

from .config import TINY
from .errors import UserError
from .files import unloadable_reason


def load_weights(model: open_clip.CLIP, weights: str, arch: str) -> None:
    """Tensors and plain data only (`weights_only=True`): a file that needs more could run code. The
    one exception is OpenAI's own release of the model, a TorchScript archive that its checksum
    (in open_clip's URL for the tag) proves to be OpenAI's."""
    try:
        try:
            open_clip.load_checkpoint(model, weights, weights_only=True)
        except RuntimeError as err:
            if "TorchScript" not in str(err) or not _is_openai_release(arch, weights):
                raise
            open_clip.load_checkpoint(model, weights, weights_only=False)  # torch.jit.load, for this file only
    except Exception as err:  # torch.load and state-dict loading raise many types for bad files
        raise UserError(f"could not load weights {weights} into {arch}: {unloadable_reason(err)}") from None


def trained_with_quick_gelu(arch: str, arch_config: dict, weights: str | None, tag: dict, stated: bool | None) -> bool:
    """Whether `arch` runs with QuickGELU (x * sigmoid(1.702 x), OpenAI's) rather than GELU for these
    weights, from what says so and never from a file's name: `stated` (`model.quick_gelu`), an
    open_clip `-quickgelu` architecture, the tag's registry entry (`tag`, empty for a file), or a
    file that is OpenAI's release. Any other file, for a model with weights of both kinds in the
    registry, is refused: its activation cannot be told from it."""
    by_arch = bool(arch_config.get("quick_gelu"))
    if stated is not None:
        if by_arch and not stated:
            raise UserError(
                f"model.quick_gelu=false contradicts {arch}, a QuickGELU architecture; "
                f"use {arch.removesuffix('-quickgelu')} for GELU"
            )
        return stated
    if weights is None or by_arch:  # random init, or a `-quickgelu` architecture
        return by_arch
    if tag:
        return bool(tag.get("quick_gelu"))
    if _is_openai_release(arch, weights):
        return True
    quick_tags = [name for name, cfg in _registry(arch).items() if cfg.get("quick_gelu")]
    if not quick_tags:
        return False  # no weights of this model were trained with QuickGELU: its own GELU
    quick = f"--model {arch}-quickgelu"
    if f"{arch}-quickgelu" not in open_clip.list_models():
        quick = "--set model.quick_gelu=true"
    raise UserError(
        f"cannot tell whether {weights} was trained with QuickGELU (as {arch}'s "
        f"{', '.join(quick_tags)} weights were) or GELU: say {quick} for QuickGELU or "
        f"--set model.quick_gelu=false for GELU, or pass the tag (--pretrained {quick_tags[0]})"
    )


def _registry(arch: str) -> dict[str, dict]:
    """open_clip's pretrained entries for `arch`, tag -> entry (url, quick_gelu, mean, ...)."""
    if arch == TINY:
        return {}
    return {tag: open_clip.get_pretrained_cfg(arch, tag) for tag in open_clip.list_pretrained_tags_by_model(arch)}


def _openai_url(arch: str) -> str:
    return _registry(arch).get("openai", {}).get("url", "")


def _is_openai_release(arch: str, path: str) -> bool:
    """Whether the file is OpenAI's release of `arch`, whatever its name: a TorchScript archive whose
    SHA-256 is the one in open_clip's URL for the `openai` tag (.../models/{sha256}/ViT-B-16.pt)."""
    url = _openai_url(arch)
    if not url or not _is_torchscript(path):
        return False
    stat = os.stat(path)
    return _sha256(path, stat.st_size, stat.st_mtime_ns) == url.split("/")[-2]


def _is_torchscript(path: str) -> bool:
    """A TorchScript archive (torch.jit.save) holds constants.pkl; torch.save's zip files do not."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


@functools.lru_cache(maxsize=4)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's SHA-256, once per version of it (the size and mtime key it): deciding the
    activation and loading the weights both ask."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(arch: str, pretrained: str | None) -> tuple[str | None, dict]:
    """Map `pretrained` to a local file and the tag's registry entry (quick_gelu, mean/std, ...;
    empty for a file).

    Looks in the local caches first so that no network is touched when the weights are there, and
    fails in one line, quickly, when they cannot be had.
    """
    if pretrained is None or pretrained in ("", "none"):
        return None, {}
    path = Path(pretrained).expanduser()
    if path.suffix or os.sep in pretrained:
        if not path.is_file():
            raise UserError(f"checkpoint file not found: {path}")
        return str(path), {}
    if arch == TINY:
        raise UserError(
            f"the tiny model has no pretrained tag {pretrained!r}: pass a checkpoint "
            "file from `petl-bench data tiny-clip`"
        )
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise UserError(
            f"unknown pretrained tag {pretrained!r} for {arch} (tags: {tags}); or pass a local checkpoint file"
        )
    local = _cached_weights(cfg)
    if local is None:
        local = _download_weights(arch, pretrained, cfg)
    return local, cfg


def _cached_weights(cfg: dict) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = (
            [filename] if filename else [open_clip.constants.HF_SAFE_WEIGHTS_NAME, open_clip.constants.HF_WEIGHTS_NAME]
        )
        for name in names:
            found = try_to_load_from_cache(repo_id=repo, filename=name)
            if isinstance(found, str):
                return found
    url = cfg.get("url", "")
    if url:
        candidate = Path("~/.cache/clip").expanduser() / Path(url).name
        if candidate.is_file():
            return str(candidate)
    return None


def _download_weights(arch: str, tag: str, cfg: dict) -> str:
    """The weights from their source, asked once: no source that answers at once is one line
    within seconds, not the hub client's minute of retries and their log lines."""
    import logging

    from huggingface_hub import constants

    hint = (
        f"weights for {arch}/{tag} are not in the local cache and cannot be downloaded"
        " ({why}); download them where there is network, or pass a local file with "
        "--pretrained PATH"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserError(hint.format(why="HF_HUB_OFFLINE is set"))
    source = constants.ENDPOINT if cfg.get("hf_hub") else cfg.get("url", "")  # as download_pretrained chooses
    if not source:
        raise UserError(hint.format(why="no download source"))
    if not _answers(source):
        raise UserError(hint.format(why=f"no answer from {source}"))
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        local = open_clip.pretrained.download_pretrained(cfg)
    except Exception as err:  # the hub and urllib raise many types; all mean "no weights"
        raise UserError(hint.format(why=type(err).__name__)) from None
    finally:
        hub_log.setLevel(level)
    if not local:
        raise UserError(hint.format(why="no download source"))
    return local


def _answers(url: str, timeout: float = 5.0) -> bool:
    """Whether anything answers one HEAD request to `url` within `timeout` (proxies from the
    environment apply); an HTTP error status is an answer too."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True
