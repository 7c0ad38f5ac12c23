"""Task models on the shared encoder (:mod:`sarssl.encoders`) for the SAR study.

- :class:`SegmentationHead`: the study's decoder for land cover. Patch tokens are laid
  back on their ``(H/P, W/P)`` grid and upsampled by ``log2(P)`` blocks of
  conv3x3 + BatchNorm + ReLU + x2 bilinear upsampling to the chip size, then a 1x1 conv
  gives per-pixel logits of the 11 WorldCover classes.
- :class:`RegressionHead`: mean of the patch tokens -> MLP -> chip-mean tree cover (%).
- :class:`UNet`: a small from-scratch convolutional baseline for both tasks.
- :class:`LinearSegmentationHead` / :class:`LinearRegressionHead`: the linear probes
  (one linear layer on frozen patch tokens; logits upsampled for segmentation, mean-pooled
  tokens for regression), after a non-learned feature standardisation (BatchNorm without
  affine parameters, as in the MAE paper's linear probe), so a probe has exactly
  ``C x D + C`` (or ``D + 1``) trainable parameters.
- :class:`PixelLinear`: the per-pixel control, a linear classifier on the 12 channels of
  each pixel (land cover) or a linear regression on the chip-mean channels (tree cover):
  no spatial context at all, the floor every deep model must clear.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders import patch_grid, patch_tokens
from ..errors import SarsslError
from ..vocabulary import CHANNELS, N_LANDCOVER_CLASSES, TASKS

log = logging.getLogger(__name__)

TREECOVER_SCALE = 100.0
"""Regression outputs are in percent; the network works in fractions (x / 100)."""


class SegmentationHead(nn.Module):
    """Progressive upsampling decoder from ViT patch tokens to per-pixel logits.

    ``(B, N, D)`` tokens -> ``(B, D, H/P, W/P)`` -> ``log2(P)`` x [conv3x3 + BN + ReLU +
    x2 bilinear upsample] -> 1x1 conv to ``num_classes``. Channel width halves at each
    block starting from ``width`` (never below 16).
    """

    def __init__(
        self,
        embed_dim: int,
        patch_size: int,
        num_classes: int = N_LANDCOVER_CLASSES,
        width: int = 128,
    ):
        super().__init__()
        n_up = int(round(math.log2(patch_size)))
        if 2**n_up != patch_size:
            raise SarsslError(f"segmentation head: patch size {patch_size} must be a power of two")
        blocks: list[nn.Module] = []
        cin = embed_dim
        for i in range(n_up):
            cout = max(16, width // (2**i))
            blocks += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(cin, num_classes, 1)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = tokens.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} tokens do not fill a {grid} grid")
        x = tokens.transpose(1, 2).reshape(b, d, grid[0], grid[1])
        return self.classifier(self.blocks(x))


class RegressionHead(nn.Module):
    """Mean-pooled patch tokens -> LayerNorm -> MLP -> one value (tree cover, percent)."""

    def __init__(self, embed_dim: int, hidden: int = 256, scale: float = TREECOVER_SCALE):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.scale = float(scale)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.mlp(self.norm(tokens.mean(dim=1))).squeeze(-1) * self.scale

    @torch.no_grad()
    def init_output(self, target_mean: float) -> None:
        """Start from the training mean: the output bias is set to ``target_mean`` (percent)
        so every initialisation starts from the same constant predictor, and short runs at
        small label fractions measure what the features add, not how fast a bias moves."""
        self.mlp[-1].bias.fill_(float(target_mean) / self.scale)


class LinearSegmentationHead(nn.Module):
    """One linear layer per patch token -> class logits on the patch grid, bilinearly
    upsampled to the chip. The standardisation has no trainable parameters."""

    def __init__(self, embed_dim: int, patch_size: int, num_classes: int = N_LANDCOVER_CLASSES):
        super().__init__()
        self.norm = nn.BatchNorm1d(embed_dim, affine=False)
        self.linear = nn.Linear(embed_dim, num_classes)
        self.patch_size = int(patch_size)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, d = tokens.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} tokens do not fill a {grid} grid")
        logits = self.linear(self.norm(tokens.reshape(b * n, d).float()))
        logits = logits.reshape(b, grid[0], grid[1], -1).permute(0, 3, 1, 2)
        size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class LinearRegressionHead(nn.Module):
    """Mean-pooled patch tokens -> standardised (no parameters) -> one linear output."""

    def __init__(self, embed_dim: int, scale: float = TREECOVER_SCALE):
        super().__init__()
        self.norm = nn.BatchNorm1d(embed_dim, affine=False)
        self.linear = nn.Linear(embed_dim, 1)
        self.scale = float(scale)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        return self.linear(self.norm(tokens.float().mean(dim=1))).squeeze(-1) * self.scale

    @torch.no_grad()
    def init_output(self, target_mean: float) -> None:
        """Start from the training mean, like :meth:`RegressionHead.init_output`."""
        self.linear.bias.fill_(float(target_mean) / self.scale)


class PixelLinear(nn.Module):
    """The per-pixel control: land cover, a 1x1 convolution (a linear classifier on each
    pixel's channels, ``C x in_chans + C`` parameters); tree cover, a linear regression on
    the chip-mean channels (``in_chans + 1``). Inputs are standardised without learned
    parameters first. It sees no neighbour of a pixel, so whatever a model with spatial
    context scores above it is what context is worth."""

    def __init__(
        self,
        task: str,
        in_chans: int = len(CHANNELS),
        num_classes: int = N_LANDCOVER_CLASSES,
        scale: float = TREECOVER_SCALE,
    ):
        super().__init__()
        if task not in TASKS:
            raise SarsslError(f"PixelLinear: unknown task {task!r}; expected one of {list(TASKS)}")
        self.task = task
        self.scale = float(scale)
        if task == "landcover":
            self.norm: nn.Module = nn.BatchNorm2d(in_chans, affine=False)
            self.linear: nn.Module = nn.Conv2d(in_chans, num_classes, 1)
        else:
            self.norm = nn.BatchNorm1d(in_chans, affine=False)
            self.linear = nn.Linear(in_chans, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "landcover":
            return self.linear(self.norm(x.float()))
        return self.linear(self.norm(x.float().mean(dim=(2, 3)))).squeeze(-1) * self.scale

    @torch.no_grad()
    def init_output(self, target_mean: float) -> None:
        if self.task == "treecover":
            self.linear.bias.fill_(float(target_mean) / self.scale)


class TaskModel(nn.Module):
    """A ViT backbone plus a task head; ``forward(images)`` gives logits or percent."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = patch_tokens(self.backbone, images)
        return self.head(tokens, patch_grid(self.backbone, tuple(images.shape[-2:])))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """Small from-scratch U-Net baseline (Ronneberger et al. 2015) for both tasks.

    ``depth`` down-sampling levels with ``width * 2**level`` channels. ``task="landcover"``
    returns ``(B, num_classes, H, W)`` logits; ``task="treecover"`` pools the bottleneck
    and returns ``(B,)`` tree cover in percent. H and W must be divisible by ``2**depth``.
    """

    def __init__(
        self,
        in_chans: int = len(CHANNELS),
        task: str = "landcover",
        num_classes: int = N_LANDCOVER_CLASSES,
        width: int = 16,
        depth: int = 3,
    ):
        super().__init__()
        if task not in TASKS:
            raise SarsslError(f"UNet: unknown task {task!r}; expected one of {list(TASKS)}")
        self.task = task
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_conv_block(in_chans, widths[0])])
        self.down.extend(_conv_block(widths[i], widths[i + 1]) for i in range(depth))
        if task == "landcover":
            self.up = nn.ModuleList(
                nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                for i in reversed(range(depth))
            )
            self.dec = nn.ModuleList(
                _conv_block(2 * widths[i], widths[i]) for i in reversed(range(depth))
            )
            self.out = nn.Conv2d(widths[0], num_classes, 1)
        else:
            self.out = RegressionHead(widths[-1], hidden=4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        if self.task == "treecover":
            return self.out(x.flatten(2).transpose(1, 2))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips[:-1])):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.out(x)


def build_task_model(
    task: str,
    backbone: nn.Module | None,
    *,
    unet_width: int = 16,
    unet_depth: int = 3,
    seg_width: int = 128,
    in_chans: int = len(CHANNELS),
    head: str = "decoder",
) -> nn.Module:
    """Task model for ``task`` on ``backbone`` (``None`` -> the U-Net baseline). ``head``:
    ``decoder`` (the study's conv decoder / MLP regression head) or ``linear`` (the
    linear probe's heads)."""
    if backbone is None:
        return UNet(in_chans=in_chans, task=task, width=unet_width, depth=unet_depth)
    d = backbone.embed_dim
    if head == "linear":
        if task == "landcover":
            return TaskModel(
                backbone, LinearSegmentationHead(d, backbone.patch_embed.patch_size[0])
            )
        if task == "treecover":
            return TaskModel(backbone, LinearRegressionHead(d))
        raise SarsslError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    if head != "decoder":
        raise SarsslError(f"unknown head {head!r}; expected decoder or linear")
    if task == "landcover":
        head: nn.Module = SegmentationHead(d, backbone.patch_embed.patch_size[0], width=seg_width)
    elif task == "treecover":
        head = RegressionHead(d)
    else:
        raise SarsslError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    return TaskModel(backbone, head)


# --------------------------------------------------------------------------------------
# encoder export / import
# --------------------------------------------------------------------------------------
