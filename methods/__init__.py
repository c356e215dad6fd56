"""Every tuning method, one file each. This explicit list is how plugins load: add yours here."""

from . import (adaptformer, bitfit, clip_adapter, cocoop, coop, fullft, ivlp, kgcoop, linear_probe, lora,  # noqa: F401
               maple, mmap, tip_adapter, vpt, zeroshot)
