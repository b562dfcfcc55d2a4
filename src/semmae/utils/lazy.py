"""Lazy package exports (PEP 562): a package names what it exports and where each name lives; a name's module is
imported on first use, so importing the package (e.g. to build the CLI parser) does not import torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], **homes: tuple[str, ...]
) -> tuple[list[str], Callable[[str], Any]]:
    """``(__all__, __getattr__)`` of ``package``: ``homes`` maps each submodule to the names it exports; a name
    once loaded is cached in ``namespace`` (the package's ``globals()``)."""
    module_of = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = namespace[name] = getattr(importlib.import_module(f"{package}.{module_of[name]}"), name)
        return value

    return sorted(module_of), __getattr__
