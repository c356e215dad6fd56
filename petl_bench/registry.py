"""Methods by name: what each is (its config class, ST or MT, a one-line summary) known without
torch, its module class imported only when a run builds it.

`petl_bench.methods` (methods/__init__.py) is the one explicit list: `declare_method("coop",
CoOpConfig, "petl_bench.methods.coop:CoOp", shared=False, summary=...)` for every method, with
the configs from the torch-free `methods/configs.py`. So `petl-bench methods`, `config`, `--set`
checks, the config hash and a sweep's dry run import no method file. Each method file's
`@register_method("coop", CoOpConfig)` is what its class says of itself; it must agree with the
declaration (the same class, config and sharing), or the import fails loudly. A plugin outside that
list registers with the decorator alone. A duplicate or malformed name fails at once.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

from .config import MethodConfig
from .errors import UserError, unknown_name

_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


@dataclass
class MethodEntry:
    name: str
    config_cls: type
    module_class: str  # "package.module:Class", imported on first use of `cls`
    shared: bool | None  # one set shared by all tasks (MT), one per task (ST), or nothing trained per task
    summary: str
    loaded: type | None = field(default=None, repr=False)

    @property
    def cls(self) -> type:
        """The module class (a PetlModule subclass); its file is imported on first use."""
        if self.loaded is None:
            importlib.import_module(self.module_class.partition(":")[0])  # its @register_method fills `loaded`
            if self.loaded is None:
                raise RuntimeError(f"method {self.name!r}: {self.module_class} is not registered by its module")
        return self.loaded


_METHODS: dict[str, MethodEntry] = {}


def _check_declaration(name: str, config_cls: type) -> None:
    if not _NAME.match(name):
        raise ValueError(f"method name {name!r} must be lower-case words joined by '-'")
    # `vars` and not `is_dataclass`: a subclass that forgot @dataclass inherits the base's fields.
    if not (isinstance(config_cls, type) and "__dataclass_fields__" in vars(config_cls)
            and issubclass(config_cls, MethodConfig)):
        raise TypeError(f"method {name!r}: its config must be a dataclass subclassing MethodConfig")


def declare_method(name: str, config_cls: type, module_class: str, shared: bool | None, summary: str) -> None:
    """Make a method known by name without importing its module (`module_class`, "pkg.mod:Class")."""
    _check_declaration(name, config_cls)
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered by {_METHODS[name].module_class}")
    _METHODS[name] = MethodEntry(name, config_cls, module_class, shared, summary)


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def register_method(name: str, config_cls: type):
    """Class decorator: `cls` is method `name`, configured by `config_cls`."""
    _check_declaration(name, config_cls)

    def add(cls):
        where = f"{cls.__module__}:{cls.__qualname__}"
        entry = _METHODS.get(name)
        if entry is None:
            entry = _METHODS[name] = MethodEntry(name, config_cls, where, cls.shared, _summary(cls))
        elif entry.loaded is not None or (entry.module_class, entry.config_cls) != (where, config_cls):
            raise ValueError(f"method {name!r} is already registered by {entry.module_class}")
        elif (entry.shared, entry.summary) != (cls.shared, _summary(cls)):
            raise ValueError(f"method {name!r}: {where} says shared={cls.shared!r}, {_summary(cls)!r}; its "
                             f"declaration says shared={entry.shared!r}, {entry.summary!r}")
        entry.loaded = cls
        cls.method_name = name
        return cls

    return add


def _load_plugins() -> None:
    import petl_bench.methods  # noqa: F401  (its __init__ declares every method; no torch)


def get_method(name: str) -> MethodEntry:
    _load_plugins()
    if name not in _METHODS:
        raise UserError(unknown_name("method", name, sorted(_METHODS)))
    return _METHODS[name]


def method_names() -> list[str]:
    _load_plugins()
    return sorted(_METHODS)
