"""Masked autoencoder (He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners")
for 12-channel SAR chips, written around a timm ``VisionTransformer`` encoder.

The image is cut into ``P x P`` patches; a random ``mask_ratio`` of them is hidden
per sample; the encoder (the ViT's own ``patch_embed``, ``pos_embed``, ``blocks`` and
``norm``) sees only the visible patches plus the class token; a light decoder (fixed 2-D
sine-cosine position embedding, ``decoder_depth`` transformer blocks of width
``decoder_dim``) fills in mask tokens and predicts every pixel of every patch, all 12
channels. The loss is the mean squared error on the *masked* patches only, in the
normalised input domain (``(x - mean) / std`` per channel, so each channel weighs alike);
``norm_pix_loss`` additionally standardises each target patch (the MAE paper's variant).

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
    noise = noise.to(x.device)
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1, stable=True)
    ids_keep = ids_shuffle[:, :keep]
    x_vis = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))
    mask = torch.ones(b, n, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_vis, mask, ids_restore


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
    def _embed(self, imgs: torch.Tensor) -> torch.Tensor:
        x = self.encoder.patch_embed(imgs)
        if x.dim() == 4:  # dynamic_img_size ViTs return NHWC
            x = x.flatten(1, 2)
        return x

    def forward_encoder(
        self,
        imgs: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        enc = self.encoder
        x = self._embed(imgs) + enc.pos_embed[:, 1:, :]
        x, mask, ids_restore = random_masking(x, self.mask_ratio, noise, generator)
        cls = (enc.cls_token + enc.pos_embed[:, :1, :]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = enc.norm_pre(x)
        for blk in enc.blocks:
            x = blk(x)
        return enc.norm(x), mask, ids_restore

    # -- decoder ---------------------------------------------------------------------
    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x)
        b, n_vis, d = x.shape
        n = ids_restore.shape[1]
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, n + 1 - n_vis, -1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]

    def loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over the masked patches only."""
        target = patchify(imgs, self.patch_size)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(
        self,
        imgs: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(imgs, noise, generator)
        pred = self.forward_decoder(latent, ids_restore)
        return self.loss(imgs, pred, mask), pred, mask

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
        self.noise = torch.rand(
            step.global_batch, self.model.num_patches, generator=step.generator()
        )

    def loss(
        self, images: torch.Tensor, step: Step, micro: int, trainable: nn.Module
    ) -> torch.Tensor:
        return trainable(images, noise=self.noise[step.positions(micro)])[0]
