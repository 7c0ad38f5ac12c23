"""The method interface of self-supervised pretraining and the hyper-parameters every
method shares.

A :class:`Method` owns its model and says, through a few hooks, what happens in one
optimiser step; the training loop (:mod:`sarssl.selfsup.pretrain`) knows no method::

    method.begin_step(step)                       # per-step schedules, noise, masks
    for micro in range(accum_steps):              # (under autocast)
        loss = method.loss(images, step, micro, trainable)
        backward(loss / accum_steps)
    method.clip_gradients(clip_grad)              # if clip_grad > 0 (unscaled gradients)
    method.before_optimizer_step(step)            # e.g. freeze the last layer
    optimiser step
    method.after_optimizer_step(step)             # e.g. EMA teacher update
    metrics line: loss, lr, throughput, **method.diagnostics()

Every default lives in one frozen dataclass per method (a subclass of
:class:`OptimConfig`) and in :class:`BackboneConfig`; the workflow schema's
``pretrain.backbone`` / ``pretrain.METHOD`` defaults equal them (a test checks it).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
from torch import nn

from ..engine import SeededBatchOrder, param_groups, step_generator
from ..errors import SarsslError


# --------------------------------------------------------------------------------------
# hyper-parameters
# --------------------------------------------------------------------------------------
def _coerce(kind: Any, key: str, value: Any) -> Any:
    """``value`` as the annotated type ``kind`` (int, float, bool, str or a tuple of floats)."""
    try:
        if typing.get_origin(kind) is tuple:
            return tuple(float(v) for v in value)
        return kind(value)
    except (TypeError, ValueError) as exc:
        raise SarsslError(
            f"--hparams: {key}={value!r} is not a valid {getattr(kind, '__name__', kind)}"
        ) from exc


class HParams:
    """Mixin of the hyper-parameter dataclasses: defaults as plain values, typed parsing."""

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default as a plain (JSON) value: tuples become lists."""
        return {
            f.name: list(f.default) if isinstance(f.default, tuple) else f.default
            for f in dataclasses.fields(cls)
        }

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any]) -> Self:
        """The fields found in ``hp`` (a flat mapping; other keys are ignored), converted to
        their annotated types; missing fields keep their defaults."""
        hints = typing.get_type_hints(cls)
        return cls(
            **{
                f.name: _coerce(hints[f.name], f.name, hp[f.name])
                for f in dataclasses.fields(cls)
                if f.name in hp
            }
        )


@dataclass(frozen=True)
class BackboneConfig(HParams):
    """The ViT encoder (the workflow's ``pretrain.backbone``): a timm model name whose
    sizes the other fields override. Extra keys of a ``--hparams`` mapping that
    :func:`sarssl.encoders.backbone_kwargs` knows (``img_size``, ``mlp_ratio``,
    ``drop_path_rate``) pass through unchanged."""

    model_name: str = "vit_tiny_patch16_224"
    patch_size: int = 8
    embed_dim: int = 96
    depth: int = 4
    num_heads: int = 3


@dataclass(frozen=True)
class OptimConfig(HParams):
    """Optimiser, schedule and loop settings of every method (the fields each method
    section of the workflow config shares). ``lr`` and ``betas`` have no common default:
    each method sets its own."""

    lr: float
    betas: tuple[float, float]
    epochs: int = 30
    batch_size: int = 32
    weight_decay: float = 0.05
    warmup_epochs: float = 2
    min_lr_ratio: float = 0.0
    accum_steps: int = 1
    dtype: str = "auto"
    compile: bool = False
    clip_grad: float = 0.0
    log_every: int = 1
    block_rows: int = 8

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "accum_steps", "log_every"):
            if getattr(self, key) < 1:
                raise SarsslError(f"--hparams: {key} must be >= 1, got {getattr(self, key)}")


# --------------------------------------------------------------------------------------
# the step context
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """Where the training loop is: what a method's hooks may depend on.

    Randomness comes only from :meth:`generator` (the same on every rank: draw for the
    whole global batch, then take :meth:`positions`) and :meth:`rank_generator` (one per
    rank and micro-step), so a resumed run and N DDP processes draw what one
    uninterrupted process draws.
    """

    index: int
    """optimiser step, from 0"""
    total: int
    """optimiser steps of the run"""
    order: SeededBatchOrder
    optimizer: torch.optim.Optimizer
    """its parameter groups already hold this step's lr; a per-step schedule of another
    setting (e.g. the weight decay) sets it in :meth:`Method.begin_step`"""

    @property
    def epoch(self) -> int:
        return self.index // self.order.steps_per_epoch

    @property
    def global_batch(self) -> int:
        return self.order.global_batch

    def positions(self, micro: int) -> slice:
        """The samples of this rank's micro-batch ``micro`` inside the global batch."""
        return self.order.positions(micro)

    def generator(self, *keys: int) -> torch.Generator:
        """A CPU generator seeded by (seed, step, ``*keys``): the same on every rank."""
        return step_generator(self.order.seed, self.index, *keys)

    def rank_generator(self, micro: int) -> torch.Generator:
        """A CPU generator of its own for this rank's micro-batch ``micro``."""
        return self.generator(self.order.rank * self.order.accum + micro)


# --------------------------------------------------------------------------------------
# the interface
# --------------------------------------------------------------------------------------
class Method:
    """A self-supervised method: its model, its loss on a batch, its hooks around the
    optimiser step (see the module docstring for the order of the calls).

    A subclass sets :attr:`name` and :attr:`Config` and implements :meth:`build` and
    :meth:`loss`; the hooks default to doing nothing. ``Method(hp, chip_size, std_db)``
    builds the backbone of the flat hyper-parameters ``hp`` (timm; seeded by the caller)
    and then the model around it.
    """

    name: ClassVar[str]
    Config: ClassVar[type[OptimConfig]]
    dynamic_img_size: ClassVar[bool] = False
    """whether the backbone must accept other image sizes than the chip size (crops)"""

    def __init__(
        self, hp: Mapping[str, Any], chip_size: int, std_db: Sequence[float] | None = None
    ):
        from ..encoders import backbone_kwargs, create_backbone

        self.config = self.Config.from_hparams(hp)
        self.chip_size = int(chip_size)
        self.std_db = std_db
        backbone_hp = {**hp, "dynamic_img_size": True} if self.dynamic_img_size else hp
        self.timm_name, self.timm_kwargs = backbone_kwargs(backbone_hp, self.chip_size)
        self.model = self.build(create_backbone(self.timm_name, **self.timm_kwargs))

    # what subclasses provide ---------------------------------------------------------
    def build(self, backbone: nn.Module) -> nn.Module:
        """The whole model around ``backbone`` (everything that is checkpointed)."""
        raise NotImplementedError

    def loss(
        self, images: torch.Tensor, step: Step, micro: int, trainable: nn.Module
    ) -> torch.Tensor:
        """The scalar loss of micro-batch ``micro`` (normalised images ``(B, C, S, S)``).

        Gradients must flow through ``trainable``, the (DDP-wrapped, compiled)
        :attr:`trainable` module, never through ``self.trainable`` directly.
        """
        raise NotImplementedError

    @property
    def trainable(self) -> nn.Module:
        """The module whose parameters the optimiser updates (and DDP synchronises)."""
        return self.model

    @property
    def encoder(self) -> nn.Module:
        """The backbone that is exported as ``encoder.safetensors``."""
        return self.model.encoder

    # hooks ---------------------------------------------------------------------------
    def begin_step(self, step: Step) -> None:
        """Before the micro-batches of optimiser step ``step``."""

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the (unscaled) gradients of :attr:`trainable` after backward; called only
        when the config's ``clip_grad`` > 0. By default the global norm over all parameters
        is clipped to ``max_norm``; a method whose recipe clips otherwise overrides it (DINO
        clips each parameter's norm)."""
        torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), max_norm)

    def before_optimizer_step(self, step: Step) -> None:
        """After backward and gradient clipping, before the optimiser step."""

    def after_optimizer_step(self, step: Step) -> None:
        """After the optimiser step."""

    def diagnostics(self) -> dict[str, float]:
        """Extra values for the metrics line of the last step."""
        return {}


# --------------------------------------------------------------------------------------
# helpers of per-step schedules
# --------------------------------------------------------------------------------------
def cosine_schedule(start: float, end: float, index: int, total: int) -> float:
    """Half cosine from ``start`` (step 0) towards ``end`` over ``total`` steps, the DINO
    reference's ``cosine_scheduler`` without warm-up: ``end + (start - end) (1 + cos(pi
    index / total)) / 2`` (step ``total`` would reach ``end``; the last step is just short
    of it, as in the reference)."""
    if total <= 0:
        return float(start)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * index / total))


def decayed_groups(optimizer: torch.optim.Optimizer, module: nn.Module) -> list[dict[str, Any]]:
    """The parameter groups of ``optimizer`` that hold weight-decayed parameters of
    ``module``, by the rule of :func:`sarssl.engine.param_groups` (no decay on 1-D
    parameters and position embeddings/tokens), whatever their current weight decay: a
    schedule sets these groups' ``weight_decay`` and leaves the others at 0. A group that
    mixes both kinds is an error."""
    decayed = {
        id(p) for g in param_groups(module, 1.0) if g["weight_decay"] > 0 for p in g["params"]
    }
    out = []
    for group in optimizer.param_groups:
        kinds = {id(p) in decayed for p in group["params"]}
        if len(kinds) > 1:
            raise SarsslError(
                "optimizer: a parameter group mixes decayed and non-decayed parameters; "
                "a weight-decay schedule cannot tell them apart"
            )
        if kinds == {True}:
            out.append(group)
    return out
