"""Every tuning method, one file each. This explicit list is how plugins load: add yours here."""

from . import bitfit, clip_adapter, coop, fullft, maple, mmap, vpt, zeroshot  # noqa: F401
