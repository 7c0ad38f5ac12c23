"""Backbones, heads, MAE and DINO building blocks, encoder export through plain timm."""

import pytest
import timm
import torch

from sarssl.downstream.models import build_task_model
from sarssl.encoders import create_backbone, export_encoder, load_encoder
from sarssl.selfsup.dino import (
    DINO,
    DINOLoss,
    MultiCropAugment,
    last_layer_attention,
    teacher_momentum,
)
from sarssl.selfsup.mae import MaskedAutoencoder, patchify, random_masking, unpatchify

TINY = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)


def tiny(**kw):
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", **{**TINY, **kw})


def test_patchify_roundtrip_and_layout():
    x = torch.arange(2 * 12 * 8 * 8, dtype=torch.float32).reshape(2, 12, 8, 8)
    p = patchify(x, 4)
    assert p.shape == (2, 4, 4 * 4 * 12)
    # patch 1 = rows 0..3, cols 4..7; first element = pixel (0, 4) of channel 0, then channel 1
    assert p[0, 1, 0] == x[0, 0, 0, 4] and p[0, 1, 1] == x[0, 1, 0, 4]
    assert torch.equal(unpatchify(p, 4, 12), x)


def test_random_masking_keeps_quarter():
    x = torch.randn(3, 16, 8)
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    vis, mask, restore = random_masking(x, 0.75, noise)
    assert vis.shape == (3, 4, 8) and mask.sum(1).tolist() == [12, 12, 12]
    # visible tokens are the 4 with the lowest noise
    keep = torch.argsort(noise, 1)[:, :4]
    assert torch.equal(vis, torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, 8)))
    assert torch.all(mask.gather(1, keep) == 0)


def test_mae_loss_only_on_masked_patches():
    mae = MaskedAutoencoder(tiny(), decoder_dim=16, decoder_depth=1, decoder_heads=2)
    x = torch.randn(2, 12, 16, 16)
    loss, pred, mask = mae(x, generator=torch.Generator().manual_seed(0))
    target = patchify(x, 4)
    per = ((pred - target) ** 2).mean(-1)
    assert loss.detach().item() == pytest.approx(float((per * mask).sum() / mask.sum()), rel=1e-5)
    assert loss.detach().item() != pytest.approx(float(per.mean()), rel=1e-6)


def test_heads_shapes_and_unet():
    x = torch.randn(2, 12, 16, 16)
    assert build_task_model("landcover", tiny())(x).shape == (2, 11, 16, 16)
    assert build_task_model("treecover", tiny())(x).shape == (2,)
    assert build_task_model("landcover", None, unet_width=4, unet_depth=2)(x).shape == (
        2,
        11,
        16,
        16,
    )
    assert build_task_model("treecover", None, unet_width=4, unet_depth=2)(x).shape == (2,)


def test_encoder_export_loads_in_plain_timm(tmp_path):
    bb = tiny()
    with torch.no_grad():
        bb.pos_embed.add_(1.0)  # not the init any more
    kwargs = dict(in_chans=12, **TINY)
    path, meta_path = export_encoder(
        bb,
        tmp_path / "encoder.safetensors",
        model_name="vit_tiny_patch16_224",
        model_kwargs=kwargs,
        method="mae",
        stats={"mean": [0] * 12, "std": [1] * 12},
    )
    assert meta_path.name == "encoder.json"
    m = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(path)),
        num_classes=0,
        **kwargs,
    )
    x = torch.randn(2, 12, 16, 16)
    bb.eval(), m.eval()
    assert torch.allclose(m(x), bb(x), atol=1e-6)
    loaded, meta = load_encoder(path)
    assert meta["method"] == "mae" and meta["patch_size"] == 4
    assert torch.allclose(loaded.eval().forward_features(x), bb.forward_features(x), atol=1e-6)


def test_dino_loss_centre_and_ema():
    crit = DINOLoss(out_dim=8, student_temp=0.1, teacher_temp=0.04, center_momentum=0.9)
    t = torch.randn(4, 8)
    s = torch.randn(8, 8)  # 2 crops of batch 2 -> n_crops = 8 / (4/2)... : 4 crops
    loss = crit(s, t, epoch=0)
    # by hand: teacher crops (2 of batch 2), student 4 crops, skip same-index pairs
    q = torch.softmax(t / 0.04, -1).chunk(2)
    ls = torch.log_softmax(s / 0.1, -1).chunk(4)
    terms = [(-q[i] * ls[v]).sum(-1).mean() for i in range(2) for v in range(4) if v != i]
    assert loss.item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)
    assert torch.allclose(crit.center, 0.1 * t.mean(0, keepdim=True))
    # momentum schedule: cosine 0.996 -> 1
    assert teacher_momentum(0, 11) == pytest.approx(0.996)
    assert teacher_momentum(10, 11) == pytest.approx(1.0)
    assert teacher_momentum(5, 11) == pytest.approx(0.998)
    # EMA
    dino = DINO(
        tiny(dynamic_img_size=True), head_hidden_dim=16, head_bottleneck_dim=8, head_out_dim=32
    )
    with torch.no_grad():
        for p in dino.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in dino.teacher.parameters()]
    dino.update_teacher(0.9)
    for b, ps, pt in zip(before, dino.student.parameters(), dino.teacher.parameters()):
        assert torch.allclose(pt, 0.9 * b + 0.1 * ps)


def test_dino_learns_and_teacher_differs():
    torch.manual_seed(0)
    dino = DINO(
        tiny(dynamic_img_size=True), head_hidden_dim=32, head_bottleneck_dim=16, head_out_dim=64
    )
    dino.criterion.center_momentum = 1.0  # fixed centre: a fixed target for the student
    aug = MultiCropAugment(16, n_local=2)
    base = torch.randn(8, 12, 16, 16)
    opt = torch.optim.AdamW(dino.student.parameters(), lr=1e-3)
    losses = []
    for step in range(20):
        crops = aug(base, torch.Generator().manual_seed(step % 2))
        assert [c.shape[-1] for c in crops] == [16, 16, 8, 8]
        loss = dino(crops, epoch=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    teacher0 = [p.clone() for p in dino.teacher.parameters()]
    dino.update_teacher(teacher_momentum(0, 20, 0.9))
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, dino.teacher.parameters()))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    diff = sum(
        float((a - b).abs().sum())
        for a, b in zip(dino.student.parameters(), dino.teacher.parameters())
    )
    assert diff > 0
    att = last_layer_attention(dino.encoder, base[:2])
    assert att.shape == (2, 2, 4, 4)
    assert torch.all(att.sum((-1, -2)) <= 1 + 1e-5) and torch.all(att >= 0)


def test_augment_is_seeded_and_sar_sensible():
    aug = MultiCropAugment(16, n_local=1, std_db=[2.0] * 12, speckle_p=1.0, channel_drop_p=0.0)
    x = torch.zeros(4, 12, 16, 16)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    # speckle on a constant image: vv/vh channels get log-gamma noise, biased low (E[10log10 G] < 0)
    g = a[0]
    assert g[:, 4:].mean() < 0 and g[:, 4:].std() > 0.1
    # vvvh noise = vv noise - vh noise of the same season
    assert torch.allclose(g[:, 0], g[:, 4] - g[:, 8], atol=1e-5)


def test_regression_head_starts_from_the_training_mean():
    import torch

    from sarssl.downstream.models import RegressionHead

    head = RegressionHead(16, hidden=8)
    head.init_output(63.5)
    with torch.no_grad():
        head.mlp[-1].weight.zero_()  # isolate the bias: the constant predictor
    out = head(torch.randn(3, 5, 16))
    assert torch.allclose(out, torch.full((3,), 63.5), atol=1e-4)


def test_encoder_export_is_byte_deterministic(tmp_path):
    """The same weights give the same file bytes (safetensors writes its metadata map in a
    random order unless the header is canonicalised)."""
    import hashlib

    bb = tiny()
    digests = set()
    for i in range(6):
        path, _ = export_encoder(
            bb,
            tmp_path / str(i) / "encoder.safetensors",
            method="mae",
            stats={},
            model_name="vit_tiny_patch16_224",
            model_kwargs=dict(in_chans=12, **TINY),
        )
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1


def test_load_encoder_refuses_non_safetensors_and_channel_mismatch(tmp_path):
    """Random bytes or a torch pickle named as encoder weights, and weights whose patch
    embedding takes another number of channels than encoder.json says, are refused with
    an InputError naming the file, before timm can adapt anything."""
    import shutil

    from sarssl.errors import InputError

    kwargs = dict(in_chans=12, **TINY)
    common = dict(
        model_name="vit_tiny_patch16_224",
        model_kwargs=kwargs,
        method="mae",
        stats={"mean": [0] * 12, "std": [1] * 12},
    )
    _, meta = export_encoder(tiny(), tmp_path / "good" / "encoder.safetensors", **common)
    junk = tmp_path / "junk" / "encoder.safetensors"
    junk.parent.mkdir()
    junk.write_bytes(bytes(range(256)) * 8)
    shutil.copy(meta, junk.with_name("encoder.json"))
    with pytest.raises(InputError, match="not a valid safetensors file") as err:
        load_encoder(junk)
    assert str(junk) in str(err.value)
    pt = tmp_path / "pt" / "encoder.pt"
    pt.parent.mkdir()
    torch.save(tiny().state_dict(), pt)
    shutil.copy(meta, pt.with_name("encoder.json"))
    with pytest.raises(InputError, match="not a valid safetensors file") as err:
        load_encoder(pt)
    assert str(pt) in str(err.value)
    # 3-channel weights described by a 12-channel encoder.json (timm would repeat them)
    three = tmp_path / "three" / "encoder.safetensors"
    export_encoder(tiny(in_chans=3), three, **common)
    with pytest.raises(InputError, match=r"3 input channels.*12") as err:
        load_encoder(three)
    assert str(three) in str(err.value)


def test_backbone_kwargs_take_the_chip_size_from_the_store():
    """The chip size passed in (the chip store's) is the model's; a hyper-parameter
    img_size may only repeat it (it used to win over the store)."""
    from sarssl.encoders import backbone_kwargs
    from sarssl.errors import SarsslError

    hp = {"model_name": "vit_tiny_patch16_224", "patch_size": 4, "embed_dim": 32}
    assert backbone_kwargs(hp, 16)[1]["img_size"] == 16
    assert backbone_kwargs({**hp, "img_size": 16}, 16)[1] == backbone_kwargs(hp, 16)[1]
    with pytest.raises(SarsslError, match=r"img_size 32 differs from the chip size 16"):
        backbone_kwargs({**hp, "img_size": 32}, 16)
