"""The one input normalisation of every model: ``(x - mean) / (std + NORM_EPS)`` per channel,
NaN / inf (no data) -> 0.

One definition, two array libraries: :func:`normalize_batch` takes a NumPy array (figures)
or a torch tensor on any device (fine-tuning through :func:`~sarssl.data.loaders.load_chips`,
pretraining through :class:`Normalize`) and computes the same float32 operations in both:
subtract the float32 mean, multiply by the float32 reciprocal :func:`channel_scale` of
``std + NORM_EPS``, zero what is not finite. So the NumPy and the torch results are
bit-identical (``tests/test_datasets.py`` checks it). :func:`denormalize_batch` is the
inverse (back to dB, for showing reconstructions).
The statistics themselves (``stats.json``) are read by :func:`sarssl.data.store.load_stats`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..vocabulary import CHANNELS

NORM_EPS = 1e-5
"""Normalisation is ``(x - mean) / (std + NORM_EPS)``; NaN (no data) then becomes 0."""


def channel_scale(std: Any, eps: float = NORM_EPS) -> np.ndarray:
    """float32 ``1 / (std + eps)`` per channel, computed in float32."""
    shifted = np.asarray(std, dtype=np.float32) + np.float32(eps)
    return (np.float32(1.0) / shifted).astype(np.float32)


def _per_channel(values: Any, ndim: int) -> np.ndarray:
    """float32 ``values`` shaped to broadcast along dimension 1 of an ``ndim``-D batch."""
    shape = [1] * ndim
    shape[1] = -1
    return np.asarray(values, dtype=np.float32).reshape(shape)


def normalize_batch(x: Any, mean: Any, std: Any, eps: float = NORM_EPS, dtype: Any = None) -> Any:
    """``(x - mean) / (std + eps)`` per channel (dimension 1) with NaN/inf (no data) -> 0.

    ``x`` is a (B, C, ...) batch of dB values in any float dtype: a torch tensor (on any
    device; the result is ``dtype``, default float32) or a NumPy array (the result is
    float32). Both compute ``(float32(x) - mean) * channel_scale(std, eps)``.
    """
    if isinstance(x, np.ndarray):
        with np.errstate(invalid="ignore", over="ignore"):
            y = (x.astype(np.float32, copy=False) - _per_channel(mean, x.ndim)) * _per_channel(
                channel_scale(std, eps), x.ndim
            )
        return np.nan_to_num(y, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    import torch

    mean_t = torch.from_numpy(_per_channel(mean, x.dim())).to(x.device)
    scale_t = torch.from_numpy(_per_channel(channel_scale(std, eps), x.dim())).to(x.device)
    return _normalize_tensor(x, mean_t, scale_t, torch.float32 if dtype is None else dtype)


def _normalize_tensor(x: Any, mean: Any, scale: Any, dtype: Any) -> Any:
    """The torch kernel of :func:`normalize_batch` (and of :class:`Normalize`)."""
    import torch

    y = (x.to(torch.float32) - mean) * scale
    return torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).to(dtype)


def denormalize_batch(x: Any, mean: Any, std: Any, eps: float = NORM_EPS) -> np.ndarray:
    """Inverse of :func:`normalize_batch` (back to dB) for a (B, C, ...) NumPy array."""
    x = np.asarray(x, dtype=np.float32)
    return x * (_per_channel(std, x.ndim) + np.float32(eps)) + _per_channel(mean, x.ndim)


def _normalize_module_class() -> type:
    import torch

    class Normalize(torch.nn.Module):
        """On-device normalisation of raw chip batches (:func:`normalize_batch` as a module).

        ``Normalize.from_stats("stats.json")`` or ``Normalize(mean, std)``; the
        statistics are buffers, so ``.to(device)`` moves them with the model.
        """

        def __init__(self, mean: Any, std: Any, eps: float = NORM_EPS, dtype: Any = None) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(_per_channel(mean, 4)))
            scale = _per_channel(channel_scale(std, eps), 4)
            self.register_buffer("scale", torch.from_numpy(scale))
            self.dtype = torch.float32 if dtype is None else dtype

        @classmethod
        def from_stats(
            cls,
            stats: str | os.PathLike | Mapping[str, Any],
            channels: Sequence[str] = CHANNELS,
            **kw: Any,
        ) -> "Normalize":
            from .store import load_stats

            mean, std = load_stats(stats, channels)
            return cls(mean, std, **kw)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _normalize_tensor(x, self.mean, self.scale, self.dtype)

    Normalize.__module__ = __name__
    Normalize.__qualname__ = "Normalize"
    return Normalize


def __getattr__(name: str) -> Any:
    # ``Normalize`` subclasses torch.nn.Module: build it on first use so that importing
    # this module (e.g. by the figures) does not import torch.
    if name == "Normalize":
        cls = _normalize_module_class()
        globals()["Normalize"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
