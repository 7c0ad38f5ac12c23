"""Method name -> :class:`~sarssl.selfsup.method.Method` class: the one place that lists
the self-supervised methods (``sarssl pretrain --method`` takes its choices from here)."""

from __future__ import annotations

from ..errors import SarsslError
from .dino import DINOMethod
from .mae import MAEMethod
from .method import Method

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (MAEMethod, DINOMethod)}


def method_class(name: str) -> type[Method]:
    """The class of method ``name``; SarsslError naming the registered ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise SarsslError(f"--method {name!r}: expected one of {list(METHODS)}") from None
