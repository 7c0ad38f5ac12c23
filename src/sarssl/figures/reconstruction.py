"""``mae-reconstructions``: what the masked autoencoder recovers from 25 % of a chip.

For each chip: the input (one season, fixed SAR false colour), the random mask (masked
patches grey; the mask ratio of the checkpoint, 0.75 in the study), the decoder's
reconstruction of every patch, and the reconstruction with the visible patches pasted
back from the input (the MAE paper's Fig. 2 convention). Reconstructions are predicted in
the normalised input domain and mapped back to dB with the training statistics
(``x_dB = x * (std + 1e-5) + mean``); with ``norm_pix_loss`` each predicted patch is first
de-standardised with the mean/variance of the true patch, as in the MAE reference
visualisation. The mask is drawn from an explicit seed.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..data.normalize import denormalize_batch, normalize_batch
from ..errors import InputError
from ..vocabulary import SEASONS, SPLITS
from .common import (
    image_axes,
    require_file,
    season_false_colour,
    select_rows,
    stretch_caption,
)
from .registry import register_figure, styled

log = logging.getLogger(__name__)

#: Colour of masked patches in the "masked input" panels.
MASK_GREY = 0.5


def reconstruct(model, images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(reconstruction (B, C, H, W) in the normalised domain, pixel mask (B, H, W) bool,
    True = masked) of a :class:`sarssl.selfsup.mae.MaskedAutoencoder` on normalised ``images``."""
    import torch

    from ..selfsup.mae import patchify, unpatchify

    model.eval()
    x = torch.as_tensor(images, dtype=torch.float32)
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.rand(x.shape[0], model.num_patches, generator=g)
    with torch.no_grad():
        _, pred, mask = model(x, noise=noise)
        pred = pred.float()
        if model.norm_pix_loss:
            target = patchify(x, model.patch_size)
            mu = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mu
        p = model.patch_size
        rec = unpatchify(pred, p, model.in_chans, model.grid)
        m = unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p).float(), p, 1, model.grid)
    return rec.numpy(), m[:, 0].numpy() > 0.5


@styled
def reconstruction_figure(
    x_db: np.ndarray,
    rec_db: np.ndarray,
    mask: np.ndarray,
    ids: Sequence[str] | None = None,
    season: str = "summer",
    mask_ratio: float | None = None,
) -> Figure:
    """Rows = chips; columns = input, masked input, reconstruction, reconstruction with
    the visible patches pasted. ``x_db``/``rec_db`` (B, 12, S, S) dB, ``mask`` (B, S, S)
    True = masked. Images carry ``gid`` ``"input|R"``, ``"masked|R"``, ``"rec|R"``,
    ``"pasted|R"`` with the false-colour arrays shown."""
    b = x_db.shape[0]
    fig = Figure(figsize=(1.5 * 4 + 0.2, 1.5 * b + 0.7), layout="constrained")
    axes = fig.subplots(b, 4, squeeze=False)
    for r in range(b):
        inp = season_false_colour(x_db[r], season)
        masked = inp.copy()
        masked[mask[r]] = MASK_GREY
        rec = season_false_colour(rec_db[r], season)
        pasted = np.where(mask[r][..., None], rec, inp)
        for c, (name, img) in enumerate(
            (("input", inp), ("masked", masked), ("rec", rec), ("pasted", pasted))
        ):
            axes[r, c].imshow(img, interpolation="nearest", gid=f"{name}|{r}")
            image_axes(axes[r, c])
        if ids is not None:
            axes[r, 0].set_ylabel(str(ids[r]), fontsize=5.5)
    ratio = f"{100 * mask_ratio:.0f}% " if mask_ratio is not None else ""
    for ax, t in zip(
        axes[0],
        (
            f"input ({season})",
            f"{ratio}masked",
            "reconstruction",
            "reconstruction +\nvisible patches",
        ),
        strict=True,
    ):
        ax.set_title(t)
    fig.suptitle(f"MAE reconstructions ({stretch_caption()})", fontsize=7)
    return fig


def load_mae(checkpoint: str | Path, chip_size: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Rebuild the :class:`~sarssl.selfsup.mae.MaskedAutoencoder` of a ``sarssl pretrain --method
    mae`` checkpoint (architecture from its ``hparams``; chip size from ``encoder.json``
    beside it, else from the size of the stored position embedding). The checkpoint is
    read with ``weights_only=True`` (:func:`sarssl.engine.load_checkpoint`): a file that is
    not plain tensors is refused (InputError) and nothing in it runs."""
    from ..engine import load_checkpoint
    from ..selfsup.pretrain import build_model

    path = require_file(checkpoint, "MAE checkpoint")
    state = load_checkpoint(path)
    if state.get("method") != "mae" or "model" not in state or "hparams" not in state:
        raise InputError(
            f"{path}: not an MAE pretraining checkpoint (method={state.get('method')!r})"
        )
    hp = dict(state["hparams"])
    meta_path = path.with_name("encoder.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if chip_size is None:
        chip_size = int(meta.get("img_size") or 0) or None
    if chip_size is None:
        n = state["model"]["encoder.pos_embed"].shape[1] - 1
        chip_size = round(n**0.5) * int(hp.get("patch_size") or 16)
    model = build_model("mae", hp, chip_size)[0]
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise InputError(
            f"{path}: weights do not fit the model rebuilt from its hparams ({exc})"
        ) from exc
    return model, meta


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="MAE pretraining checkpoint.pt")
    p.add_argument("--chips-dir", required=True, help="chip store to draw chips from")
    p.add_argument(
        "--stats",
        default=None,
        help="stats.json of the pretraining "
        "(default: the stats in encoder.json beside the checkpoint)",
    )
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--n-chips", type=int, default=4)
    p.add_argument("--season", default="summer", choices=SEASONS)
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and of the chip choice")


@register_figure("mae-reconstructions", "MAE input, mask and reconstruction of a few chips", _args)
def _build(args: argparse.Namespace) -> Figure:
    from ..data.loaders import load_chips
    from ..data.store import ChipStore, load_stats

    model, meta = load_mae(args.checkpoint)
    store = ChipStore(require_file(args.chips_dir, "chip store"))
    if args.stats is not None:
        stats: Any = require_file(args.stats, "statistics file")
    elif "stats" in meta:
        stats = meta["stats"]
    else:
        raise InputError(f"{args.checkpoint}: no encoder.json with stats beside it; pass --stats")
    mean, std = load_stats(stats, store.channels)
    if store.chip_size != model.grid[0] * model.patch_size:
        raise InputError(
            f"{args.chips_dir}: chips of {store.chip_size} px but the MAE was trained on "
            f"{model.grid[0] * model.patch_size} px"
        )
    rows = select_rows(store, args.n_chips, args.seed, split=args.split)
    chips = load_chips(store, rows, arrays=("x",))
    x = chips["x"].float().numpy()
    rec, mask = reconstruct(model, normalize_batch(x, mean, std), args.seed)
    return reconstruction_figure(
        x,
        denormalize_batch(rec, mean, std),
        mask,
        chips.ids.tolist(),
        season=args.season,
        mask_ratio=model.mask_ratio,
    )
