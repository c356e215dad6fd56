"""Methods register by name: `@register_method("coop", CoOpConfig)` on a `PetlModule` subclass.

Plugins are loaded by one explicit import list (`petl_bench.methods`), never by side effects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import MethodConfig
from .errors import UserError

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type
    config_cls: type

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, config_cls: type):
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} must be lower-case words joined by '-'")
    # `vars` and not `is_dataclass`: a subclass that forgot @dataclass inherits the base's fields.
    if not ("__dataclass_fields__" in vars(config_cls) and issubclass(config_cls, MethodConfig)):
        raise TypeError(f"method {name!r}: its config must be a dataclass subclassing MethodConfig")

    def add(cls):
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered by {_METHODS[name].cls.__module__}")
        _METHODS[name] = MethodEntry(name, cls, config_cls)
        cls.method_name = name
        return cls

    return add


def _load_plugins() -> None:
    import petl_bench.methods  # noqa: F401  (its __init__ imports every method file)


def get_method(name: str) -> MethodEntry:
    _load_plugins()
    if name not in _METHODS:
        raise UserError(f"unknown method {name!r} (known: {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


def method_names() -> list[str]:
    _load_plugins()
    return sorted(_METHODS)
