"""Masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners")
for 12-channel SAR chips, written around a timm ``VisionTransformer`` encoder.

The image is cut into ``P x P`` patches; a random ``mask_ratio`` of them is hidden
per sample; the encoder (the ViT's own ``patch_embed``, ``pos_embed``, ``blocks`` and
``norm``) sees only the visible patches plus the class token: only the visible patches
are embedded (the patch embedding is a linear map of each patch's pixels, applied to the
kept ones). As in the reference MAE, the encoder's position embedding is the **fixed** 2-D
sine-cosine one (:func:`sincos_pos_embed_2d`, class token 0), written into the timm ViT's
``pos_embed`` and frozen (``requires_grad=False``): it is exported with the encoder, so
fine-tuning and plain timm load it like any weights. A light decoder (fixed 2-D
sine-cosine position embedding, ``decoder_depth`` transformer blocks of width
``decoder_dim``) fills in mask tokens and predicts the pixels of the patches, all 12
channels. The loss is the mean squared error on the *masked* patches only, in the
normalised input domain (``(x - mean) / std`` per channel, so each channel weighs alike);
``norm_pix_loss`` additionally standardises each target patch (the MAE paper's variant).
In training the prediction head runs on the masked tokens only and the squared error is
computed from one float32 difference of the masked patches (no full-size float32 copies
of the prediction); ``forward(..., pred_all=True)`` (the default, used by the
reconstruction figure) also predicts the visible patches.

The masking noise can be supplied by the caller (``noise``), which :class:`MAEMethod`
uses to make the masks a function of (seed, step, sample) only: identical with or
without resume, and identical between one process and several DDP ranks. Defaults:
:class:`MAEConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .method import Method, OptimConfig, Step

DECODER_MLP_RATIO = 4.0
"""Hidden width of the decoder blocks' MLP, in units of ``decoder_dim`` (as in the MAE paper)."""


@dataclass(frozen=True)
class MAEConfig(OptimConfig):
    """MAE hyper-parameters with their defaults (the workflow's ``pretrain.mae``): a light
    decoder sized for the demo's tiny ViT (width 96); the study's ViT-B uses 512/16."""

    lr: float = 1.5e-3
    betas: tuple[float, float] = (0.9, 0.95)
    mask_ratio: float = 0.75
    decoder_depth: int = 1
    decoder_dim: int = 64
    decoder_heads: int = 4
    norm_pix_loss: bool = False


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, L, p*p*C)`` with L = (H/p)(W/p), patches in row-major
    order and each patch flattened as ``(row, col, channel)`` (channel fastest), for any C."""
    b, c, h, w = imgs.shape
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible by patch size {p}")
    gh, gw = h // p, w // p
    x = imgs.reshape(b, c, gh, p, gw, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(
    x: torch.Tensor, p: int, c: int, grid: tuple[int, int] | None = None
) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, L, p*p*C)`` -> ``(B, C, H, W)`` (square grid unless
    ``grid`` is given)."""
    b, n, _ = x.shape
    if grid is None:
        g = int(round(n**0.5))
        if g * g != n:
            raise ValueError(f"{n} patches do not form a square grid; pass grid=")
        grid = (g, g)
    gh, gw = grid
    x = x.reshape(b, gh, gw, p, p, c)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, c, gh * p, gw * p)


def sincos_pos_embed_2d(dim: int, grid: tuple[int, int], cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(1, [1+] gh*gw, dim)`` (Vaswani et al.;
    half of the dimensions encode the row, half the column; frequencies 1/10000^(2i/d))."""
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    gh, gw = grid
    yy, xx = np.meshgrid(
        np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij"
    )

    def encode(pos: np.ndarray, d: int) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    emb = np.concatenate([encode(yy, dim // 2), encode(xx, dim // 2)], axis=1)
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


def random_masking(
    x: torch.Tensor,
    mask_ratio: float,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (the MAE recipe).

    ``x`` (B, L, D) -> (visible tokens (B, L_keep, D), mask (B, L) with 1 = masked,
    ids_restore (B, L) to undo the shuffle). ``noise`` (B, L) in [0, 1) may be given;
    otherwise it is drawn with ``generator``.
    """
    b, n, d = x.shape
    keep = int(n * (1 - mask_ratio))
    if noise is None:
        noise = torch.rand(
            b, n, generator=generator, device="cpu" if generator is None else generator.device
        )
    ids_restore, ids_keep, mask = masking_order(b, n, keep, x.device, noise)
    x_vis = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    return x_vis, mask, ids_restore


def masking_order(
    b: int,
    n: int,
    keep: int,
    device: torch.device,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids_restore (B, L), ids_keep (B, keep), mask (B, L), 1 = masked) of the MAE
    shuffle: patches sorted by ``noise`` (B, L) (drawn with ``generator`` when None),
    the first ``keep`` visible."""
    if noise is None:
        noise = torch.rand(
            b, n, generator=generator, device="cpu" if generator is None else generator.device
        )
    noise = noise.to(device, non_blocking=True)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    mask = torch.ones(b, n, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_restore, ids_shuffle[:, :keep], mask


class MaskedAutoencoder(nn.Module):
    """MAE around a timm ViT ``encoder`` (modified in place: it *is* the exported encoder).

    ``forward(imgs, noise=None, generator=None) -> (loss, pred, mask)`` with ``pred``
    (B, L, P*P*C) the reconstruction of every patch and ``mask`` (B, L), 1 = masked.
    """

    def __init__(
        self,
        encoder: nn.Module,
        mask_ratio: float = MAEConfig.mask_ratio,
        decoder_dim: int = MAEConfig.decoder_dim,
        decoder_depth: int = MAEConfig.decoder_depth,
        decoder_heads: int = MAEConfig.decoder_heads,
        norm_pix_loss: bool = MAEConfig.norm_pix_loss,
        mlp_ratio: float = DECODER_MLP_RATIO,
    ):
        super().__init__()
        from timm.models.vision_transformer import Block

        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if getattr(encoder, "num_reg_tokens", 0) or getattr(encoder, "no_embed_class", False):
            raise ValueError("MAE supports ViTs with one class token and class position embedding")
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        pe = encoder.patch_embed
        self.patch_size = int(pe.patch_size[0])
        self.in_chans = int(pe.proj.in_channels)
        self.grid = tuple(int(g) for g in pe.grid_size)
        dim = encoder.embed_dim
        n = self.grid[0] * self.grid[1]

        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed_2d(decoder_dim, self.grid), persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_dim, decoder_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size**2 * self.in_chans)
        self.num_patches = n
        self.init_decoder()
        self.fix_pos_embed()

    def fix_pos_embed(self) -> None:
        """The encoder's position embedding := the fixed 2-D sin-cos one, frozen (MAE)."""
        enc = self.encoder
        fixed = sincos_pos_embed_2d(enc.embed_dim, self.grid, cls_token=True)
        if tuple(enc.pos_embed.shape) != tuple(fixed.shape):
            raise ValueError(
                f"MAE: encoder pos_embed {tuple(enc.pos_embed.shape)} is not "
                f"{tuple(fixed.shape)} (one class token and a {self.grid} patch grid)"
            )
        with torch.no_grad():
            enc.pos_embed.copy_(fixed)
        enc.pos_embed.requires_grad_(False)

    def init_decoder(self) -> None:
        """The MAE reference's initialisation of the decoder: normal mask token, Xavier
        linear layers, unit layer norms."""
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [
            self.decoder_embed,
            self.decoder_pred,
            *self.decoder_blocks.modules(),
            self.decoder_norm,
        ]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- encoder ---------------------------------------------------------------------
    def embed_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """The ViT's patch embedding of patchified pixels ``(B, K, P*P*C)`` (any subset of
        the patches, :func:`patchify` order): the convolution with stride = kernel = P is
        this linear map of each patch, so only the given patches are computed."""
        pe = self.encoder.patch_embed
        w = pe.proj.weight  # (D, C, P, P) -> (D, P*P*C) in patchify's (row, col, channel) order
        x = nn.functional.linear(patches, w.permute(0, 2, 3, 1).flatten(1), pe.proj.bias)
        return pe.norm(x)

    def forward_encoder(
        self,
        imgs: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        patches: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latent of the class token + visible patches, mask, ids_restore); ``patches``:
        ``patchify(imgs)`` when the caller has it already."""
        enc = self.encoder
        if patches is None:
            patches = patchify(imgs, self.patch_size)
        b, n, _ = patches.shape
        keep = int(n * (1 - self.mask_ratio))
        ids_restore, ids_keep, mask = masking_order(b, n, keep, patches.device, noise, generator)
        visible = torch.gather(patches, 1, ids_keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        pos = enc.pos_embed[:, 1:, :].expand(b, -1, -1)
        pos = torch.gather(pos, 1, ids_keep.unsqueeze(-1).expand(-1, -1, pos.shape[-1]))
        x = self.embed_patches(visible) + pos
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = enc.norm_pre(x)
        for blk in enc.blocks:
            x = blk(x)
        return enc.norm(x), mask, ids_restore

    # -- decoder ---------------------------------------------------------------------
    def forward_decoder(
        self, x: torch.Tensor, ids_restore: torch.Tensor, ids_masked: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predicted pixels of every patch ``(B, L, P*P*C)``, or with ``ids_masked``
        ``(B, M)`` of those patches only (the prediction head runs on them alone)."""
        x = self.decoder_embed(x)
        b, n_vis, d = x.shape
        n = ids_restore.shape[1]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, n + 1 - n_vis, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = x[:, 1:]
        if ids_masked is not None:
            x = torch.gather(x, 1, ids_masked.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return self.decoder_pred(self.decoder_norm(x))

    def target(self, patches: torch.Tensor) -> torch.Tensor:
        """The reconstruction target of patchified pixels (standardised per patch with
        ``norm_pix_loss``)."""
        if not self.norm_pix_loss:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        return (patches - mean) / (var + 1e-6) ** 0.5

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only (``pred``
        of every patch; the reference formula, see :meth:`masked_loss` for training)."""
        target = self.target(patchify(imgs, self.patch_size))
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    @staticmethod
    def masked_loss(pred_masked: torch.Tensor, target_masked: torch.Tensor) -> torch.Tensor:
        """:meth:`loss` from the masked patches alone (every sample masks as many):
        ``mean over patches of mean((pred - target)**2)``, from one float32 difference."""
        diff = pred_masked.float() - target_masked.float()  # one temporary (a no-op cast in fp32)
        per_patch = torch.linalg.vector_norm(diff, dim=-1) ** 2 / diff.shape[-1]
        return per_patch.mean()

    def forward(
        self,
        imgs: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        pred_all: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(loss, prediction of every patch or None when not ``pred_all``, mask)."""
        patches = patchify(imgs, self.patch_size)
        latent, mask, ids_restore = self.forward_encoder(imgs, noise, generator, patches)
        keep = latent.shape[1] - 1
        ids_masked = torch.argsort(ids_restore, dim=1, stable=True)[:, keep:]
        target = self.target(
            torch.gather(patches, 1, ids_masked.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        )
        if not pred_all:
            pred_masked = self.forward_decoder(latent, ids_restore, ids_masked)
            return self.masked_loss(pred_masked, target), None, mask
        pred = self.forward_decoder(latent, ids_restore)
        pred_masked = torch.gather(pred, 1, ids_masked.unsqueeze(-1).expand(-1, -1, pred.shape[-1]))
        return self.masked_loss(pred_masked, target), pred, mask

    @torch.no_grad()
    def reconstruct(
        self, imgs: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstructed images (B, C, H, W), pixel mask (B, 1, H, W), 1 = was masked)."""
        _, pred, mask = self.forward(imgs, noise)
        p = self.patch_size
        rec = unpatchify(pred.float(), p, self.in_chans, self.grid)
        m = unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p), p, 1, self.grid)
        return rec, m


class MAEMethod(Method):
    """MAE as a pretraining method: the masks of a step are drawn for the whole global
    batch from the step's generator (each rank and micro-batch takes its samples' rows),
    the loss is the masked reconstruction error, the encoder is exported."""

    name = "mae"
    Config = MAEConfig

    def build(self, backbone: nn.Module) -> MaskedAutoencoder:
        c = self.config
        return MaskedAutoencoder(
            backbone,
            mask_ratio=c.mask_ratio,
            decoder_dim=c.decoder_dim,
            decoder_depth=c.decoder_depth,
            decoder_heads=c.decoder_heads,
            norm_pix_loss=c.norm_pix_loss,
        )

    def begin_step(self, step: Step) -> None:
        # drawn on the CPU (the same masks on every device); moved without blocking the host
        noise = torch.rand(step.global_batch, self.model.num_patches, generator=step.generator())
        device = self.model.mask_token.device
        if device.type == "cuda":
            noise = noise.pin_memory().to(device, non_blocking=True)
        self.noise = noise

    def loss(
        self, images: torch.Tensor, step: Step, micro: int, trainable: nn.Module
    ) -> torch.Tensor:
        return trainable(images, noise=self.noise[step.positions(micro)], pred_all=False)[0]
