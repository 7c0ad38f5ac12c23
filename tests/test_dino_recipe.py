"""DINO follows the reference recipe (facebookresearch/dino ``main_dino.py``) where it
matters: a cosine weight-decay schedule 0.04 -> 0.4 on the decayed parameter groups only,
per-parameter gradient clipping (not the global norm), the prototype layer frozen during
the first epoch(s), a teacher that is always in eval mode (no drop-path on the targets),
and multi-crop with the reference's number of local crops by default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import BACKBONE, cfg, make_store
from sarssl.engine import SeededBatchOrder, param_groups
from sarssl.selfsup import pretrain
from sarssl.selfsup.dino import DINOConfig, DINOMethod, MultiCropAugment, clip_per_parameter
from sarssl.selfsup.method import Method, Step, cosine_schedule, decayed_groups
from sarssl.selfsup.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
CHIP = 16
HEAD = {"head_hidden_dim": 16, "head_bottleneck_dim": 8, "head_out_dim": 32, "local_crops": 2}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("chips"))


def dino(**kw) -> DINOMethod:
    torch.manual_seed(0)
    return DINOMethod({**BACKBONE, **HEAD, **kw}, CHIP)


def reference_wd(i: int, total: int, start: float = 0.04, end: float = 0.4) -> float:
    """``utils.cosine_scheduler(start, end, epochs, niter_per_ep)[i]`` of the reference."""
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * i / total))


def is_decayed(name: str, p: torch.Tensor) -> bool:
    return p.ndim > 1 and "pos_embed" not in name and "cls_token" not in name


# --------------------------------------------------------------------------------------
# weight-decay schedule
# --------------------------------------------------------------------------------------
def test_cosine_schedule_is_the_references():
    total = 40
    got = [cosine_schedule(0.04, 0.4, i, total) for i in range(total)]
    assert got == pytest.approx([reference_wd(i, total) for i in range(total)])
    assert got[0] == pytest.approx(0.04) and got[total // 2] == pytest.approx(0.22)
    assert all(a < b for a, b in zip(got, got[1:])) and got[-1] < 0.4


def test_weight_decay_schedule_sets_the_decayed_groups_only():
    m = dino()
    c = m.config
    assert (c.weight_decay, c.weight_decay_end) == (0.04, 0.4)
    opt = torch.optim.AdamW(param_groups(m.trainable, c.weight_decay), lr=1e-3)
    names = {id(p): n for n, p in m.trainable.named_parameters()}
    order = SeededBatchOrder(32, 8, seed=0)
    total = 12
    for i in (0, 5, 11):
        if i == 5:  # a resumed optimiser has new group dicts: the schedule still finds them
            opt.load_state_dict(opt.state_dict())
        m.begin_step(Step(i, total, order, opt))
        assert m.diagnostics()["weight_decay"] == pytest.approx(reference_wd(i, total))
        for g in opt.param_groups:
            kinds = {is_decayed(names[id(p)], p) for p in g["params"]}
            assert len(kinds) == 1
            want = reference_wd(i, total) if kinds == {True} else 0.0
            assert g["weight_decay"] == pytest.approx(want)
    assert len(decayed_groups(opt, m.trainable)) == 1
    mixed = torch.optim.AdamW([{"params": list(m.trainable.parameters())}])
    with pytest.raises(Exception, match="mixes decayed and non-decayed"):
        decayed_groups(mixed, m.trainable)


def test_a_dino_run_schedules_the_weight_decay(store, tmp_path):
    chips, stats = store
    hp = {"backbone": BACKBONE, "dino": {**HEAD, "batch_size": 8, "epochs": 2, "lr": 1e-3}}
    out = tmp_path / "run"
    assert pretrain.train(cfg(chips, stats, out, method="dino", hp=hp)) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    total = len(lines)  # 32 train+val chips, batch 8, 2 epochs
    assert total == 8
    assert [r["weight_decay"] for r in lines] == pytest.approx(
        [reference_wd(i, total) for i in range(total)]
    )
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    wds = sorted(g["weight_decay"] for g in state["optimizer"]["param_groups"])
    assert wds == pytest.approx([0.0, reference_wd(total - 1, total)])


# --------------------------------------------------------------------------------------
# gradient clipping
# --------------------------------------------------------------------------------------
def test_clip_per_parameter_is_the_references():
    big = torch.nn.Parameter(torch.zeros(3, 4))
    small = torch.nn.Parameter(torch.zeros(5))
    none = torch.nn.Parameter(torch.zeros(2))
    big.grad = torch.full((3, 4), 10.0)  # norm 34.6
    small.grad = torch.full((5,), 0.1)  # norm 0.22
    clip_per_parameter([big, small, none], 3.0)
    assert float(big.grad.norm()) == pytest.approx(3.0, rel=1e-5)
    assert torch.allclose(big.grad, torch.full((3, 4), 10.0 * 3.0 / (math.sqrt(1200) + 1e-6)))
    assert torch.equal(small.grad, torch.full((5,), 0.1)) and none.grad is None
    # a global-norm clip would have scaled the small gradient, too
    m = dino()
    for p in m.trainable.parameters():
        p.grad = torch.ones_like(p) * (100.0 if p.ndim > 1 else 1e-3)
    m.clip_gradients(3.0)
    norms = {n: float(p.grad.norm()) for n, p in m.trainable.named_parameters()}
    assert all(
        v == pytest.approx(3.0, rel=1e-4) for n, v in norms.items() if "weight" in n and v > 1
    )
    bias = dict(m.trainable.named_parameters())["head.mlp.0.bias"]
    assert torch.equal(bias.grad, torch.full_like(bias, 1e-3))


def test_the_loop_clips_each_dino_parameter(store, tmp_path, monkeypatch):
    """Through ``sarssl pretrain``: with a tiny ``clip_grad`` every parameter that has a
    gradient is clipped to it separately (a global clip would leave at most one parameter
    at that norm); the prototype layer gets no gradient during the first epoch."""
    seen: list[dict[str, float]] = []
    clip_calls: list[float] = []

    class Recording(DINOMethod):
        def clip_gradients(self, max_norm):
            clip_calls.append(max_norm)
            super().clip_gradients(max_norm)

        def before_optimizer_step(self, step):
            super().before_optimizer_step(step)
            seen.append(
                {
                    n: (float(p.grad.norm()) if p.grad is not None else None)
                    for n, p in self.trainable.named_parameters()
                }
            )

    monkeypatch.setitem(METHODS, "dino", Recording)
    clip = 1e-4
    hp = {
        "backbone": BACKBONE,
        "dino": {**HEAD, "batch_size": 8, "epochs": 2, "lr": 1e-3, "clip_grad": clip},
    }
    out = tmp_path / "clip"
    assert pretrain.train(cfg(*store, out, method="dino", hp=hp)) == 0
    assert clip_calls == [clip] * 8 and len(seen) == 8
    for k, norms in enumerate(seen):
        has = {n: v for n, v in norms.items() if v is not None}
        assert max(has.values()) <= clip * (1 + 1e-4)
        assert sum(v > 0.99 * clip for v in has.values()) > len(has) // 2
        # epoch 0 (steps 0-3): no update of the prototype layer; afterwards it trains
        assert (norms["head.last_layer.weight"] is None) == (k < 4)


def test_the_default_method_clips_the_global_norm():
    class Plain(Method):
        name, Config = "plain", DINOConfig

        def build(self, backbone):
            return torch.nn.ModuleDict({"encoder": backbone})

    m = Plain(BACKBONE, CHIP)
    for p in m.trainable.parameters():
        p.grad = torch.ones_like(p)
    total = math.sqrt(sum(p.numel() for p in m.trainable.parameters()))
    m.clip_gradients(3.0)
    for p in m.trainable.parameters():
        assert torch.allclose(p.grad, torch.full_like(p, 3.0 / total), rtol=1e-4)


# --------------------------------------------------------------------------------------
# the teacher
# --------------------------------------------------------------------------------------
def test_the_teacher_is_in_eval_mode_and_deterministic_with_drop_path():
    m = dino(drop_path_rate=0.5)
    model = m.model
    assert any(mod.__class__.__name__ == "DropPath" for mod in model.teacher.modules())
    for mode in (True, False, True):
        model.train(mode)
        assert not any(mod.training for mod in model.teacher.modules())
        assert all(mod.training == mode for mod in model.student.modules())
    m.trainable.train()  # what the training loop does
    assert not model.teacher.training
    x = torch.randn(4, 12, CHIP, CHIP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t1, t2 = model.teacher([x]), model.teacher([x])
        s1, s2 = model.student([x]), model.student([x])
    assert torch.equal(t1, t2)
    assert not torch.allclose(s1, s2)  # the student's drop-path is active: the check has teeth


def test_a_dino_run_never_puts_the_teacher_in_train_mode(store, tmp_path, monkeypatch):
    modes: list[bool] = []

    class Recording(DINOMethod):
        def loss(self, images, step, micro, trainable):
            modes.append(any(mod.training for mod in self.model.teacher.modules()))
            return super().loss(images, step, micro, trainable)

    monkeypatch.setitem(METHODS, "dino", Recording)
    hp = {
        "backbone": {**BACKBONE, "drop_path_rate": 0.2},
        "dino": {**HEAD, "batch_size": 8, "epochs": 1, "lr": 1e-3},
    }
    assert pretrain.train(cfg(*store, tmp_path / "t", method="dino", hp=hp, max_steps=2)) == 0
    assert modes == [False, False]


# --------------------------------------------------------------------------------------
# multi-crop
# --------------------------------------------------------------------------------------
def test_multi_crop_defaults_to_the_references_local_crops():
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    dino_schema = schema["properties"]["pretrain"]["properties"]["dino"]["properties"]
    assert DINOConfig.local_crops == 8 == dino_schema["local_crops"]["default"]
    assert dino_schema["weight_decay_end"]["default"] == DINOConfig.weight_decay_end == 0.4
    crops = MultiCropAugment(CHIP)(torch.zeros(2, 12, CHIP, CHIP), torch.Generator().manual_seed(0))
    assert [c.shape[-1] for c in crops] == [CHIP] * 2 + [CHIP // 2] * 8
