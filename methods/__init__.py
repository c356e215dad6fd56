"""Every tuning method, one file each. This explicit list is how plugins load: add yours here."""

from . import coop, zeroshot  # noqa: F401
