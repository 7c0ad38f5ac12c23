"""DINO self-distillation (Caron et al. 2021, "Emerging Properties in Self-Supervised
Vision Transformers") for 12-channel SAR chips.

A student ViT and an exponential-moving-average (EMA) teacher ViT, each followed by a
projection head (3-layer MLP, L2-normalised bottleneck, then a weight-normalised linear
layer onto K prototypes). The student sees every crop of a chip (2 global crops at S and
L local crops at S/2); the teacher sees the global crops; the loss is the cross-entropy
between the sharpened, centred teacher distribution (low temperature, after an optional
linear warm-up) and the student distribution over all (teacher crop, other student crop)
pairs. The centre is an EMA of the teacher outputs; the teacher momentum follows a cosine
from its base value to 1. Sizes, temperatures and momenta: :class:`DINOConfig`.

Optimisation as in the reference (facebookresearch/dino ``main_dino.py``): the weight decay
of the decayed parameters follows a cosine from ``weight_decay`` (0.04) to
``weight_decay_end`` (0.4) over the run; each parameter's gradient norm is clipped to
``clip_grad`` (3.0) separately (``utils.clip_gradients``), not the global norm; the
prototype layer gets no update during the first ``freeze_last_layer`` epoch(s). The
teacher is never trained by gradients and always runs in eval mode (no drop-path or
dropout on the targets), whatever mode the model is put in.

Augmentations are SAR-sensible only (no colour jitter, solarisation or grayscale, which
have no meaning for backscatter): random resized crops, flips, 90-degree rotations (the
map has no preferred orientation at 10 m; note they change the apparent look direction,
which is acceptable for invariance learning), speckle-like noise and channel dropout.

Speckle noise. Multiplicative speckle ``I' = I * G`` with ``G ~ Gamma(L, 1/L)`` (mean 1,
L looks) is *additive* in dB: ``dB' = dB + 10 log10 G``. ``ln G`` has mean
``psi(L) - ln L`` and variance ``psi_1(L)`` (digamma / trigamma); we draw it as a Gaussian
with exactly these moments (the usual log-speckle approximation, accurate for L >= 4),
independently per pixel, season and polarisation. The chips are already normalised
(``(dB - mean_c) / std_c``), so the dB noise is divided by the channel std; the VV-VH
channels get the difference of the VV and VH noise draws of the same season, as the
difference of the noisy dB values would. Channel dropout sets a channel to 0, its mean.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..vocabulary import CHANNELS, SEASONS
from .method import Method, OptimConfig, Step, cosine_schedule, decayed_groups

N_GLOBAL = 2
"""Global crops per image: the teacher's views (the DINO recipe)."""


@dataclass(frozen=True)
class DINOConfig(OptimConfig):
    """DINO hyper-parameters with their defaults (the workflow's ``pretrain.dino``).

    The teacher temperature warms up linearly from ``warmup_teacher_temp`` to
    ``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs (equal temperatures: no
    warm-up); the teacher momentum follows a cosine from ``momentum_teacher`` to 1; the
    prototype layer is frozen during the first ``freeze_last_layer`` epochs; the weight
    decay follows a cosine from ``weight_decay`` to ``weight_decay_end``; ``clip_grad``
    bounds each parameter's gradient norm. ``local_crops``: 8, the reference
    ``main_dino.py`` default (its released ViT-S/16 runs used 10).
    """

    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    head_hidden_dim: int = 256
    head_bottleneck_dim: int = 64
    head_out_dim: int = 1024
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 5
    student_temp: float = 0.1
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    local_crops: int = 8
    freeze_last_layer: int = 1
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    speckle_looks: float = 16.0
    speckle_p: float = 0.5
    channel_drop_p: float = 0.1


# --------------------------------------------------------------------------------------
# heads and wrappers
# --------------------------------------------------------------------------------------
class DINOHead(nn.Module):
    """MLP (in -> hidden -> hidden -> bottleneck), L2 normalisation, and a weight-normalised
    prototype layer (norm fixed to 1, as in the DINO reference) to ``out_dim`` logits."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = DINOConfig.head_hidden_dim,
        bottleneck_dim: int = DINOConfig.head_bottleneck_dim,
        out_dim: int = DINOConfig.head_out_dim,
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        nn.init.trunc_normal_(self.last_layer.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        # weight normalisation with g = 1: each prototype is a unit vector
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))


class MultiCropWrapper(nn.Module):
    """Runs the backbone once per crop resolution and the head on all class tokens."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        outs = []
        start = 0
        while start < len(crops):
            end = start
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            outs.append(self.backbone(torch.cat(list(crops[start:end]))))  # (n*B, D) class tokens
            start = end
        return self.head(torch.cat(outs))


class DINOLoss(nn.Module):
    """Cross-entropy between centred/sharpened teacher and student prototype distributions."""

    def __init__(
        self,
        out_dim: int = DINOConfig.head_out_dim,
        n_global: int = N_GLOBAL,
        student_temp: float = DINOConfig.student_temp,
        teacher_temp: float = DINOConfig.teacher_temp,
        warmup_teacher_temp: float = DINOConfig.warmup_teacher_temp,
        warmup_teacher_temp_epochs: int = DINOConfig.warmup_teacher_temp_epochs,
        center_momentum: float = DINOConfig.center_momentum,
    ):
        super().__init__()
        self.n_global = n_global
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_epochs = int(warmup_teacher_temp_epochs)
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: float) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
        ``warmup_teacher_temp_epochs`` epochs, constant afterwards."""
        if self.warmup_epochs <= 0 or epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        t = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: float
    ) -> torch.Tensor:
        n_crops = student_out.shape[0] // (teacher_out.shape[0] // self.n_global)
        s = (student_out.float() / self.student_temp).chunk(n_crops)
        temp = self.teacher_temperature(epoch)
        probs = F.softmax((teacher_out.float() - self.center) / temp, dim=-1).detach()
        self.last_diagnostics = collapse_diagnostics(probs)
        t = probs.chunk(self.n_global)
        total = student_out.new_zeros((), dtype=torch.float32)
        n_terms = 0
        for iq, q in enumerate(t):
            for v in range(n_crops):
                if v == iq:
                    continue  # never compare a crop with itself
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n_terms += 1
        self.update_center(teacher_out)
        return total / n_terms

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA of the (all-rank) mean teacher output; prevents one prototype dominating."""
        batch_center = teacher_out.float().sum(dim=0, keepdim=True)
        count = torch.tensor([teacher_out.shape[0]], dtype=torch.float32, device=teacher_out.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            torch.distributed.all_reduce(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


@torch.no_grad()
def collapse_diagnostics(probs: torch.Tensor) -> dict[str, float]:
    """Entropies (nats) that tell the two DINO collapse modes apart (Caron et al. 2021, sec. 5.3).

    ``teacher_entropy``: mean entropy of the per-image teacher distributions;
    ``teacher_marginal_entropy``: entropy of their batch mean. Healthy training has a low
    per-image entropy (confident, sharpened targets) and a high marginal entropy (different
    images use different prototypes). *Uniform* collapse: both approach ``ln K`` (K
    prototypes; the loss then approaches ``ln K``, too). *One-prototype* collapse: both
    approach 0.
    """
    p = probs.float().clamp_min(1e-12)
    per_image = float(-(p * p.log()).sum(-1).mean())
    m = p.mean(0)
    marginal = float(-(m * m.log()).sum())
    return {"teacher_entropy": per_image, "teacher_marginal_entropy": marginal}


def teacher_momentum(
    step: int, total_steps: int, base: float = DINOConfig.momentum_teacher
) -> float:
    """Cosine schedule of the EMA momentum from ``base`` (step 0) to 1 (last step)."""
    if total_steps <= 1:
        return base
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / (total_steps - 1)) + 1) / 2


class DINO(nn.Module):
    """Student, EMA teacher and loss. ``forward(crops, epoch, student=None)`` -> loss.

    ``student`` lets the training loop pass a DDP-wrapped :attr:`student`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head_hidden_dim: int = DINOConfig.head_hidden_dim,
        head_bottleneck_dim: int = DINOConfig.head_bottleneck_dim,
        head_out_dim: int = DINOConfig.head_out_dim,
        student_temp: float = DINOConfig.student_temp,
        teacher_temp: float = DINOConfig.teacher_temp,
        warmup_teacher_temp: float = DINOConfig.warmup_teacher_temp,
        warmup_teacher_temp_epochs: int = DINOConfig.warmup_teacher_temp_epochs,
        center_momentum: float = DINOConfig.center_momentum,
        n_global: int = N_GLOBAL,
    ):
        super().__init__()
        head = DINOHead(backbone.embed_dim, head_hidden_dim, head_bottleneck_dim, head_out_dim)
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.n_global = n_global
        self.criterion = DINOLoss(
            head_out_dim,
            n_global,
            student_temp,
            teacher_temp,
            warmup_teacher_temp,
            warmup_teacher_temp_epochs,
            center_momentum,
        )

    def train(self, mode: bool = True) -> DINO:
        """Put the student (and the loss) in ``mode``; the teacher stays in eval mode: it is
        never trained by gradients, and its targets must not see drop-path or dropout."""
        super().train(mode)
        self.teacher.eval()
        return self

    @property
    def encoder(self) -> nn.Module:
        """The backbone that is exported. The *teacher* is the better encoder in DINO
        (the reference evaluates it), so it is the one returned."""
        return self.teacher.backbone

    def forward(
        self, crops: Sequence[torch.Tensor], epoch: float, student: nn.Module | None = None
    ) -> torch.Tensor:
        with torch.no_grad():
            t_out = self.teacher(crops[: self.n_global])
        s_out = (student or self.student)(crops)
        return self.criterion(s_out, t_out, epoch)

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- m * teacher + (1 - m) * student, parameter by parameter."""
        for ps, pt in zip(self.student.parameters(), self.teacher.parameters()):
            pt.mul_(momentum).add_(ps.detach(), alpha=1 - momentum)


@torch.no_grad()
def clip_per_parameter(parameters: Iterable[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient so that its L2 norm is at most ``max_norm``,
    separately per parameter (the DINO reference's ``utils.clip_gradients``: factor
    ``max_norm / (norm + 1e-6)`` when below 1); parameters without a gradient are skipped."""
    for p in parameters:
        if p.grad is None:
            continue
        norm = torch.linalg.vector_norm(p.grad.detach().float())
        p.grad.mul_((max_norm / (norm + 1e-6)).clamp(max=1.0).to(p.grad.dtype))


# --------------------------------------------------------------------------------------
# attention maps
# --------------------------------------------------------------------------------------
@torch.no_grad()
def last_layer_attention(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class-token -> patch attention of every head of the last block: ``(B, heads, gh, gw)``.

    Recomputes the last block's softmax(q k^T / sqrt(d)) explicitly (the fused kernel
    does not return attention weights); rows sum to 1 over all tokens, the class token's
    attention to itself is dropped.
    """
    x = backbone.patch_embed(images)
    x = backbone._pos_embed(x)
    x = backbone.patch_drop(x)
    x = backbone.norm_pre(x)
    for blk in backbone.blocks[:-1]:
        x = blk(x)
    blk = backbone.blocks[-1]
    attn_mod = blk.attn
    y = blk.norm1(x)
    b, n, c = y.shape
    h = attn_mod.num_heads
    qkv = attn_mod.qkv(y).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    q, k = attn_mod.q_norm(q), attn_mod.k_norm(k)
    attn = (q * attn_mod.scale) @ k.transpose(-2, -1)
    attn = attn.softmax(dim=-1)
    prefix = backbone.num_prefix_tokens
    gh, gw = (
        images.shape[-2] // backbone.patch_embed.patch_size[0],
        images.shape[-1] // backbone.patch_embed.patch_size[1],
    )
    return attn[:, :, 0, prefix:].reshape(b, h, gh, gw)


# --------------------------------------------------------------------------------------
# augmentations
# --------------------------------------------------------------------------------------
def _log_gamma_moments_db(looks: float) -> tuple[float, float]:
    """Mean and std (dB) of ``10 log10 G`` for ``G ~ Gamma(L, 1/L)``."""
    from scipy.special import digamma, polygamma

    k = 10.0 / math.log(10.0)
    return k * (float(digamma(looks)) - math.log(looks)), k * math.sqrt(float(polygamma(1, looks)))


class MultiCropAugment:
    """2 global crops at ``size`` and ``n_local`` local crops at ``size // 2`` of a batch of
    normalised 12-channel chips, with SAR-sensible augmentations (module docstring).

    ``__call__(images, generator)``: every random choice comes from the CPU
    ``generator``; the per-pixel speckle noise from a device generator seeded from it.
    """

    def __init__(
        self,
        size: int,
        n_local: int = DINOConfig.local_crops,
        global_scale: tuple[float, float] = DINOConfig.global_scale,
        local_scale: tuple[float, float] = DINOConfig.local_scale,
        std_db: Sequence[float] | None = None,
        channels: Sequence[str] = CHANNELS,
        speckle_looks: float = DINOConfig.speckle_looks,
        speckle_p: float = DINOConfig.speckle_p,
        channel_drop_p: float = DINOConfig.channel_drop_p,
        n_global: int = N_GLOBAL,
    ):
        self.size = int(size)
        self.local_size = max(1, int(size) // 2)
        self.n_local = int(n_local)
        self.n_global = int(n_global)
        self.global_scale = global_scale
        self.local_scale = local_scale
        self.speckle_p = float(speckle_p)
        self.channel_drop_p = float(channel_drop_p)
        self.mu_db, self.sigma_db = (
            _log_gamma_moments_db(speckle_looks) if speckle_looks > 0 else (0.0, 0.0)
        )
        std = (
            torch.ones(len(channels))
            if std_db is None
            else torch.as_tensor(list(std_db), dtype=torch.float32)
        )
        self.inv_std = 1.0 / (std + 1e-5)
        # which noise draw (vv or vh of a season) enters each channel, with which sign
        self.vv_idx, self.vh_idx = [], []
        for name in channels:
            band, season = name.split("_", 1)
            s = SEASONS.index(season)
            self.vv_idx.append(s if band in ("vv", "vvvh") else -1)
            self.vh_idx.append(s if band in ("vh", "vvvh") else -1)
        self.vh_sign = torch.tensor([-1.0 if name.startswith("vvvh") else 1.0 for name in channels])

    # individual transforms ---------------------------------------------------------
    def _crop_boxes(
        self, b: int, h: int, w: int, scale: tuple[float, float], g: torch.Generator
    ) -> torch.Tensor:
        area = (
            h
            * w
            * (scale[0] + (scale[1] - scale[0]) * torch.rand(b, generator=g, dtype=torch.float64))
        )
        log_r = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(
            b, generator=g, dtype=torch.float64
        )
        r = torch.exp(log_r)
        cw = torch.sqrt(area * r).clamp(1, w)
        ch = torch.sqrt(area / r).clamp(1, h)
        x0 = (w - cw) * torch.rand(b, generator=g, dtype=torch.float64)
        y0 = (h - ch) * torch.rand(b, generator=g, dtype=torch.float64)
        idx = torch.arange(b, dtype=torch.float64)
        return torch.stack([idx, x0, y0, x0 + cw, y0 + ch], dim=1).float()

    def _resized_crop(
        self, images: torch.Tensor, out: int, scale: tuple[float, float], g: torch.Generator
    ) -> torch.Tensor:
        from torchvision.ops import roi_align

        b, _, h, w = images.shape
        boxes = self._crop_boxes(b, h, w, scale, g).to(images.device)
        return roi_align(
            images.float(),
            boxes,
            output_size=(out, out),
            spatial_scale=1.0,
            sampling_ratio=2,
            aligned=True,
        )

    @staticmethod
    def _flip_rotate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        k = torch.randint(0, 4, (b,), generator=g)
        flip = torch.rand(b, generator=g) < 0.5
        out = x.clone()
        for kk in range(4):
            for ff in (False, True):
                sel = ((k == kk) & (flip == ff)).nonzero().flatten()
                if sel.numel() == 0:
                    continue
                y = x[sel.to(x.device)]
                if ff:
                    y = y.flip(-1)
                out[sel.to(x.device)] = torch.rot90(y, kk, dims=(-2, -1))
        return out

    def _speckle(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.sigma_db == 0 or self.speckle_p <= 0:
            return x
        b, c, h, w = x.shape
        apply = (torch.rand(b, generator=g) < self.speckle_p).to(x.device).float().view(b, 1, 1, 1)
        dev_g = torch.Generator(device=x.device)
        dev_g.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        n_seasons = len(SEASONS)
        noise = self.mu_db + self.sigma_db * torch.randn(
            b, 2, n_seasons, h, w, generator=dev_g, device=x.device
        )
        zeros = torch.zeros(b, 1, h, w, device=x.device)
        vv = torch.cat([noise[:, 0], zeros], dim=1)  # index -1 -> zeros
        vh = torch.cat([noise[:, 1], zeros], dim=1)
        vv_c = vv[:, self.vv_idx]
        vh_c = vh[:, self.vh_idx] * self.vh_sign.to(x.device).view(1, c, 1, 1)
        add_db = vv_c + vh_c
        return x + apply * add_db * self.inv_std.to(x.device).view(1, c, 1, 1)

    def _channel_dropout(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.channel_drop_p <= 0:
            return x
        b, c = x.shape[:2]
        keep = torch.rand(b, c, generator=g) >= self.channel_drop_p
        keep[keep.sum(1) == 0] = True  # never drop every channel
        return x * keep.to(x.device, x.dtype).view(b, c, 1, 1)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        crops = []
        for i in range(self.n_global + self.n_local):
            is_global = i < self.n_global
            x = self._resized_crop(
                images,
                self.size if is_global else self.local_size,
                self.global_scale if is_global else self.local_scale,
                generator,
            )
            x = self._flip_rotate(x, generator)
            x = self._speckle(x, generator)
            x = self._channel_dropout(x, generator)
            crops.append(x.to(images.dtype))
        return crops


class DINOMethod(Method):
    """DINO as a pretraining method: multi-crop augmentation of each micro-batch (its own
    generator per rank and micro-step), the cosine weight-decay schedule of the decayed
    parameter groups, per-parameter gradient clipping, last-layer freezing during the first
    epochs, the EMA teacher update after every optimiser step, the teacher's collapse
    diagnostics and the weight decay in the metrics; the teacher backbone is exported."""

    name = "dino"
    Config = DINOConfig
    dynamic_img_size = True  # local crops are S/2

    def build(self, backbone: nn.Module) -> DINO:
        c = self.config
        model = DINO(
            backbone,
            head_hidden_dim=c.head_hidden_dim,
            head_bottleneck_dim=c.head_bottleneck_dim,
            head_out_dim=c.head_out_dim,
            student_temp=c.student_temp,
            teacher_temp=c.teacher_temp,
            warmup_teacher_temp=c.warmup_teacher_temp,
            warmup_teacher_temp_epochs=c.warmup_teacher_temp_epochs,
            center_momentum=c.center_momentum,
        )
        self.augment = MultiCropAugment(
            self.chip_size,
            n_local=c.local_crops,
            global_scale=c.global_scale,
            local_scale=c.local_scale,
            std_db=self.std_db,
            speckle_looks=c.speckle_looks,
            speckle_p=c.speckle_p,
            channel_drop_p=c.channel_drop_p,
        )
        self.weight_decay = c.weight_decay  # of the last step (begin_step sets it)
        return model

    @property
    def trainable(self) -> nn.Module:
        return self.model.student

    def loss(
        self, images: torch.Tensor, step: Step, micro: int, trainable: nn.Module
    ) -> torch.Tensor:
        crops = self.augment(images, step.rank_generator(micro))
        return self.model(crops, step.epoch, student=trainable)

    def begin_step(self, step: Step) -> None:
        """The weight decay of this step (cosine ``weight_decay`` -> ``weight_decay_end``)
        on the decayed parameter groups; the others keep 0."""
        c = self.config
        self.weight_decay = cosine_schedule(
            c.weight_decay, c.weight_decay_end, step.index, step.total
        )
        for group in decayed_groups(step.optimizer, self.trainable):
            group["weight_decay"] = self.weight_decay

    def clip_gradients(self, max_norm: float) -> None:
        """Per-parameter clipping, as the reference (not the global norm)."""
        clip_per_parameter(self.trainable.parameters(), max_norm)

    def before_optimizer_step(self, step: Step) -> None:
        if step.epoch < self.config.freeze_last_layer:
            self.model.student.head.last_layer.weight.grad = None

    def after_optimizer_step(self, step: Step) -> None:
        self.model.update_teacher(
            teacher_momentum(step.index, step.total, self.config.momentum_teacher)
        )

    def diagnostics(self) -> dict[str, float]:
        return {
            **getattr(self.model.criterion, "last_diagnostics", {}),
            "weight_decay": self.weight_decay,
        }
