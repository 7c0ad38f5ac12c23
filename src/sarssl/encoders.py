"""The ViT encoder every stage shares: built, sized, exported and loaded in one place.

- :func:`create_backbone`: a timm ``VisionTransformer`` with 12 input channels (the
  :data:`sarssl.vocabulary.CHANNELS` order) and no classifier (``num_classes=0``); its
  image size is always the chip store's (:func:`check_img_size`). timm's attention uses the
  fused ``F.scaled_dot_product_attention`` kernel by default.
- :func:`patch_tokens` / :func:`patch_grid`: the encoder's patch tokens and their grid.
- :func:`export_encoder` / :func:`load_encoder`: ``encoder.safetensors`` + ``encoder.json``
  that plain timm loads with
  ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH),
  num_classes=0, **model_kwargs)`` (see ``docs/architecture.md``). The export is
  byte-deterministic (same weights, same bytes). :func:`load_encoder` reads only
  safetensors (never a pickle) and refuses weights whose patch embedding takes another
  number of input channels than ``encoder.json`` declares, before timm could "adapt" them
  (timm repeats 3-channel filters over 12 channels, or silently re-initialises the layer).
- :func:`export_timm_dir`: the same encoder in timm's local/Hub folder layout, loadable
  with ``timm.create_model("local-dir:PATH", pretrained=True)``.

Pretraining (:mod:`sarssl.selfsup`) exports encoders, fine-tuning (:mod:`sarssl.downstream`)
and the figures load them: this module sits below both.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import InputError, SarsslError
from .io import atomic_path, write_json
from .vocabulary import CHANNELS

log = logging.getLogger(__name__)


def check_img_size(hparams: dict[str, Any], chip_size: int, where: str = "the chip store") -> None:
    """The chip size is the chip store's: an ``img_size`` in the hyper-parameters is allowed
    only when it says the same (SarsslError naming both otherwise)."""
    given = hparams.get("img_size")
    if given is not None and int(given) != int(chip_size):
        raise SarsslError(
            f"--hparams: img_size {int(given)} differs from the chip size {int(chip_size)} "
            f"of {where}; "
            "the chip size is read from the chip store (leave img_size out or make it equal)"
        )


def backbone_kwargs(
    hparams: dict[str, Any], img_size: int, in_chans: int = len(CHANNELS)
) -> tuple[str, dict[str, Any]]:
    """Split a config ``backbone`` block into ``(timm model name, model kwargs)`` for chips of
    ``img_size`` pixels (the chip store's; :func:`check_img_size`).

    The kwargs are exactly what ``timm.create_model`` needs besides ``num_classes=0``,
    so they can be stored in ``encoder.json`` and reused by anyone with timm.
    """
    if "model_name" not in hparams:
        raise SarsslError("hyper-parameters: backbone needs 'model_name' (a timm ViT name)")
    check_img_size(hparams, img_size)
    kwargs: dict[str, Any] = {"in_chans": int(in_chans), "img_size": int(img_size)}
    for key in ("patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate"):
        if key in hparams and hparams[key] is not None:
            kwargs[key] = hparams[key]
    if hparams.get("dynamic_img_size"):
        kwargs["dynamic_img_size"] = True
    return str(hparams["model_name"]), kwargs


def create_backbone(
    model_name: str,
    in_chans: int = len(CHANNELS),
    img_size: int = 64,
    patch_size: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """A timm Vision Transformer without classifier for ``in_chans``-channel SAR chips.

    ``patch_size=None`` keeps the architecture's own patch size. Extra ``kwargs``
    (``embed_dim``, ``depth``, ``num_heads``, ``dynamic_img_size``...) go to timm, e.g.
    ``create_backbone("vit_tiny_patch16_224", img_size=64, patch_size=8, embed_dim=96,
    depth=4, num_heads=3)`` or the study's ``create_backbone("vit_base_patch16_224",
    img_size=448)``.
    """
    import timm

    if patch_size is not None:
        kwargs["patch_size"] = int(patch_size)
    try:
        model = timm.create_model(
            model_name, in_chans=in_chans, img_size=img_size, num_classes=0, **kwargs
        )
    except RuntimeError as exc:  # unknown model name
        raise SarsslError(f"backbone {model_name!r}: {exc}") from exc
    if not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise SarsslError(
            f"backbone {model_name!r}: only timm VisionTransformer models are supported"
        )
    return model


def patch_grid(backbone: nn.Module, img_size: int | tuple[int, int]) -> tuple[int, int]:
    """Token grid ``(H/P, W/P)`` of a ViT for an input of ``img_size`` pixels."""
    p = backbone.patch_embed.patch_size
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return h // p[0], w // p[1]


def patch_tokens(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Final-norm patch tokens ``(B, N, D)`` (class/register tokens removed)."""
    feats = backbone.forward_features(images)
    return feats[:, backbone.num_prefix_tokens :]


def export_encoder(
    backbone: nn.Module,
    path: str | os.PathLike,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    method: str,
    stats: dict[str, Any],
    channels: list[str] | tuple[str, ...] = CHANNELS,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``path`` (safetensors state dict of the encoder) and ``encoder.json`` beside it.

    Both files are written atomically. Returns ``(weights path, json path)``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in backbone.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(
            state, str(tmp), metadata={"format": "pt", "model_name": model_name, "method": method}
        )
        _canonical_safetensors_header(tmp)
    meta = {
        "model_name": model_name,
        "model_kwargs": model_kwargs,
        "channels": list(channels),
        "stats": stats,
        "method": method,
        "img_size": int(model_kwargs.get("img_size", 0)),
        "patch_size": int(backbone.patch_embed.patch_size[0]),
        "weights": path.name,
    }
    if extra:
        meta.update(extra)
    json_path = path.with_name("encoder.json")
    write_json(json_path, meta)
    return path, json_path


TIMM_DIR = "timm"
"""Folder beside ``encoder.safetensors`` holding the same encoder in timm's local layout."""


def export_timm_dir(
    backbone: nn.Module,
    out_dir: str | os.PathLike,
    *,
    model_kwargs: dict[str, Any],
    stats: dict[str, Any],
    channels: list[str] | tuple[str, ...] = CHANNELS,
    extra: dict[str, Any] | None = None,
) -> Path:
    """The encoder in timm's own local/Hub layout (``model.safetensors`` + ``config.json``,
    written by timm's ``save_for_hf``), so that plain timm loads it with
    ``timm.create_model("local-dir:OUT_DIR", pretrained=True)`` (and the folder can be
    pushed to the Hugging Face Hub as is). ``config.json`` records the model arguments
    (12 input channels, image size, no classifier), the normalisation statistics as timm's
    ``mean``/``std`` (dB, per channel in ``channels`` order) and a ``sarssl`` section
    (channels, ``extra``). Written atomically (a temporary folder renamed into place)."""
    from timm.models import save_for_hf

    from .io import atomic_dir

    args = json.loads(json.dumps(model_kwargs))  # plain JSON values, as config.json holds
    cfg = {
        "pretrained_cfg": {
            "mean": list(stats["mean"]),
            "std": list(stats["std"]),
            # not the ImageNet weights whose pretrained_cfg the architecture starts from
            "tag": "sarssl" + (f"_{extra['method']}" if extra and "method" in extra else ""),
        },
        "sarssl": {"channels": list(channels), "units": "dB", **(extra or {})},
    }
    with atomic_dir(out_dir) as tmp:
        save_for_hf(backbone, str(tmp), model_config=cfg, model_args=args, safe_serialization=True)
    return Path(out_dir)


def _canonical_safetensors_header(path: Path) -> None:
    """Rewrite, in place, the JSON header of a safetensors file with its ``__metadata__``
    keys sorted. safetensors serialises that map from a Rust ``HashMap`` in a random order,
    so identical weights gave different file bytes from one export to the next; the tensor
    entries (sorted by dtype and name by the writer) and the data are left as they are.
    """
    with open(path, "r+b") as fh:
        n = int.from_bytes(fh.read(8), "little")
        raw = fh.read(n)
        header = json.loads(raw)
        meta = header.pop("__metadata__", None)
        canon = ({"__metadata__": dict(sorted(meta.items()))} if meta else {}) | header
        text = json.dumps(canon, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (n - len(text))
        if len(text) != n:  # cannot happen: same entries, same compact JSON
            raise SarsslError(f"{path}: unexpected safetensors header layout")
        fh.seek(8)
        fh.write(text)


def encoder_weight_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of an encoder weights file, read from its safetensors header only
    (nothing is unpickled or loaded). InputError, naming the file, for anything that is
    not a valid safetensors file (a torch ``.pt`` pickle, random bytes, a truncated file)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # SafetensorError (no common base class), OSError
        raise InputError(
            f"{path}: not a valid safetensors file ({exc}); encoder weights must be the "
            "encoder.safetensors written by sarssl pretrain (pickled .pt files are not read)"
        ) from None


def encoder_in_chans(path: str | os.PathLike) -> int:
    """Input channels of the encoder weights at ``path``: dimension 1 of the patch
    embedding's ``patch_embed.proj.weight`` (InputError if the file has none)."""
    shapes = encoder_weight_shapes(path)
    shape = shapes.get("patch_embed.proj.weight")
    if shape is None or len(shape) != 4:
        raise InputError(
            f"{path}: no 4-D patch_embed.proj.weight (found {shape}); "
            "not the weights of a timm ViT encoder"
        )
    return int(shape[1])


def read_encoder_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``encoder.json`` beside an ``encoder.safetensors`` file (InputError if absent)."""
    path = Path(path)
    json_path = path.with_name("encoder.json") if path.suffix != ".json" else path
    if not json_path.is_file():
        raise InputError(f"{path}: encoder.json not found beside it")
    try:
        meta = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{json_path}: invalid JSON ({exc})") from exc
    for key in ("model_name", "model_kwargs", "channels", "stats"):
        if key not in meta:
            raise InputError(f"{json_path}: missing key {key!r}")
    return meta


def load_encoder(path: str | os.PathLike, **override: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Build the exported encoder with plain timm (the documented contract) + its metadata.

    ``override`` replaces model kwargs (e.g. ``dynamic_img_size=True``). Before timm sees
    the file: it must be a valid safetensors file named ``*.safetensors`` (timm would
    otherwise unpickle it), and its patch embedding must take the ``in_chans`` of
    ``encoder.json``, which must equal its number of ``channels`` (InputError naming the
    file and both counts otherwise).
    """
    import timm

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: encoder weights not found")
    meta = read_encoder_meta(path)
    kwargs = dict(meta["model_kwargs"])
    kwargs.update(override)
    weight_chans = encoder_in_chans(path)  # validates the safetensors header
    if path.suffix != ".safetensors":
        raise InputError(
            f"{path}: encoder weights must be named *.safetensors (timm picks its reader by "
            "the suffix)"
        )
    json_path = path.with_name("encoder.json")
    declared = int(kwargs.get("in_chans", 3))  # timm's default
    if weight_chans != declared or weight_chans != len(meta["channels"]):
        raise InputError(
            f"{path}: the weights' patch embedding takes {weight_chans} input channels but "
            f"{json_path} declares in_chans {declared} and {len(meta['channels'])} channels; "
            "refusing to let timm adapt the weights to another channel count"
        )
    try:
        model = timm.create_model(
            meta["model_name"],
            pretrained=True,
            pretrained_cfg_overlay=dict(file=str(path)),
            num_classes=0,
            **kwargs,
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot load encoder {meta['model_name']} ({exc})") from exc
    return model, meta
