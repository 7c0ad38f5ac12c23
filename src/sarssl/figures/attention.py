"""``attention``: DINO's emergent segmentation (Caron et al. 2021, Fig. 1; the study's
DINO attention-map paper, arXiv 2310.03513).

For each chip, the last transformer block's attention from the class token to every
patch token, one map per head, computed by :func:`sarssl.selfsup.dino.last_layer_attention`
(softmax(q k^T / sqrt(d)) recomputed explicitly). The class token's attention to itself
is dropped and each head's map is renormalised to sum to 1 over the patches (a
distribution over the chip), then upsampled to the chip size by repeating each value over
its ``P x P`` patch (nearest neighbour, x patch size), so every map pixel shows the
attention of the patch it lies in. Shown beside the SAR input and the land-cover truth,
with each head on its own colour scale (0 .. that head's maximum) and the head mean last.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..vocabulary import IGNORE_INDEX, SEASONS, SPLITS
from .common import (
    image_axes,
    landcover_cmap,
    landcover_image,
    landcover_legend_handles,
    require_file,
    season_false_colour,
    select_rows,
)
from .registry import register_figure, styled

log = logging.getLogger(__name__)


def attention_maps(backbone, images: np.ndarray) -> np.ndarray:
    """CLS -> patch attention of the last block, ``(B, heads, gh, gw)`` float64, each
    head renormalised to sum to 1 over the patches. ``images`` are normalised inputs."""
    import torch

    from ..selfsup.dino import last_layer_attention

    backbone.eval()
    with torch.no_grad():
        att = last_layer_attention(backbone, torch.as_tensor(images, dtype=torch.float32))
    a = att.double().numpy()
    return a / a.sum(axis=(-2, -1), keepdims=True)


def upsample(maps: np.ndarray, patch: int) -> np.ndarray:
    """Repeat every patch value over its ``patch x patch`` pixels (last two axes)."""
    return np.repeat(np.repeat(maps, patch, axis=-2), patch, axis=-1)


@styled
def attention_figure(
    x_db: np.ndarray,
    landcover: np.ndarray,
    maps: np.ndarray,
    patch: int,
    ids: Sequence[str] | None = None,
    season: str = "summer",
    title: str = "",
) -> Figure:
    """Rows = chips; columns = SAR input, land-cover truth, one upsampled attention map per
    head, and the head mean. ``maps`` (B, heads, gh, gw) from :func:`attention_maps`.
    Attention images carry ``gid`` ``"attn|ROW|HEAD"`` (``HEAD`` = index or ``mean``) and
    show the upsampled map exactly."""
    b, heads = maps.shape[:2]
    ncol = 2 + heads + 1
    fig = Figure(figsize=(1.3 * ncol, 1.3 * b + 0.9), layout="constrained")
    axes = fig.subplots(b, ncol, squeeze=False)
    cmap, norm = landcover_cmap()
    seen: set[int] = set()
    for r in range(b):
        axes[r, 0].imshow(season_false_colour(x_db[r], season), interpolation="nearest")
        axes[r, 1].imshow(
            landcover_image(landcover[r]), cmap=cmap, norm=norm, interpolation="nearest"
        )
        seen.update(int(k) for k in np.unique(landcover[r]) if k != IGNORE_INDEX)
        up = upsample(maps[r], patch)
        for h in range(heads):
            axes[r, 2 + h].imshow(
                up[h],
                cmap="inferno",
                vmin=0,
                vmax=float(up[h].max()),
                interpolation="nearest",
                gid=f"attn|{r}|{h}",
            )
        axes[r, -1].imshow(
            up.mean(0),
            cmap="inferno",
            vmin=0,
            vmax=float(up.mean(0).max()),
            interpolation="nearest",
            gid=f"attn|{r}|mean",
        )
        if ids is not None:
            axes[r, 0].set_ylabel(str(ids[r]), fontsize=5.5)
        for ax in axes[r]:
            image_axes(ax)
    titles = (
        [f"SAR input ({season})", "Land cover: truth"]
        + [f"head {h + 1}" for h in range(heads)]
        + ["mean of heads"]
    )
    for ax, t in zip(axes[0], titles, strict=True):
        ax.set_title(t)
    handles = landcover_legend_handles(sorted(seen))
    if handles:
        fig.legend(
            handles=handles, loc="outside lower center", ncols=min(4, len(handles)), fontsize=6
        )
    fig.suptitle(
        title
        or f"DINO last-layer [CLS] attention per head "
        f"(patch {patch} px; dark = 0, bright = head max)"
    )
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder", required=True, help="DINO encoder.safetensors (encoder.json beside it)"
    )
    p.add_argument("--chips-dir", required=True, help="chip store to draw chips from")
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--n-chips", type=int, default=4)
    p.add_argument(
        "--season", default="summer", choices=SEASONS, help="season of the SAR input shown"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the chip choice among equals")


@register_figure("attention", "DINO last-layer CLS attention per head over test chips", _args)
def _build(args: argparse.Namespace) -> Figure:
    from ..data.loaders import load_chips
    from ..data.normalize import normalize_batch
    from ..data.store import ChipStore, load_stats
    from ..encoders import load_encoder

    store = ChipStore(require_file(args.chips_dir, "chip store"))
    backbone, meta = load_encoder(
        require_file(args.encoder, "encoder weights"), img_size=store.chip_size
    )
    if list(meta["channels"]) != store.channels:
        raise InputError(
            f"{args.encoder}: encoder channels {meta['channels']} differ from the store's"
        )
    mean, std = load_stats(meta["stats"], store.channels)
    rows = select_rows(store, args.n_chips, args.seed, split=args.split)
    chips = load_chips(store, rows, arrays=("x", "landcover"))
    x = chips["x"].float().numpy()
    maps = attention_maps(backbone, normalize_batch(x, mean, std))
    patch = int(backbone.patch_embed.patch_size[0])
    return attention_figure(
        x, chips["landcover"].numpy(), maps, patch, chips.ids.tolist(), season=args.season
    )
