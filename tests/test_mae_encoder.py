"""The MAE recipe of the encoder: fixed 2-D sin-cos position embedding (frozen, exported,
loadable by fine-tuning and plain timm), patch embedding of the visible patches only, and
the training loss from the masked patches equal to the reference formula."""

import json

import pytest
import timm
import torch

from conftest import MAE_HP, cfg, make_store
from sarssl.encoders import create_backbone, load_encoder
from sarssl.engine import param_groups
from sarssl.selfsup.mae import MaskedAutoencoder, patchify, sincos_pos_embed_2d
from sarssl.selfsup.pretrain import train


def tiny_mae(**kw):
    torch.manual_seed(0)
    bb = create_backbone(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2
    )
    return MaskedAutoencoder(bb, decoder_dim=16, decoder_depth=1, decoder_heads=2, **kw)


def test_position_embedding_is_fixed_sincos_and_not_trained():
    mae = tiny_mae()
    pe = mae.encoder.pos_embed
    assert torch.equal(pe.detach(), sincos_pos_embed_2d(32, (4, 4), cls_token=True))
    assert not pe.requires_grad
    trained = {id(p) for g in param_groups(mae, 0.05) for p in g["params"]}
    assert id(pe) not in trained  # the optimiser never sees it
    opt = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=1e-2)
    before = pe.detach().clone()
    loss, _, _ = mae(torch.randn(2, 12, 16, 16), generator=torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    assert pe.grad is None and torch.equal(pe.detach(), before)


def test_visible_patch_embedding_equals_the_convolution():
    mae = tiny_mae()
    x = torch.randn(3, 12, 16, 16)
    conv = mae.encoder.patch_embed(x)  # (B, L, D) over every patch
    lin = mae.embed_patches(patchify(x, 4))
    assert torch.allclose(conv, lin, atol=1e-5, rtol=1e-5)
    # the encoder embeds only the kept quarter: its tokens are those patches + positions
    noise = torch.rand(3, 16, generator=torch.Generator().manual_seed(2))
    keep = torch.argsort(noise, 1)[:, :4]
    latent, mask, _ = mae.forward_encoder(x, noise)
    assert latent.shape == (3, 1 + 4, 32) and mask.sum(1).tolist() == [12, 12, 12]
    enc = mae.encoder
    ref = conv + enc.pos_embed[:, 1:]
    ref = torch.gather(ref, 1, keep.unsqueeze(-1).expand(-1, -1, 32))
    ref = torch.cat([(enc.cls_token + enc.pos_embed[:, :1]).expand(3, -1, -1), ref], 1)
    ref = enc.norm_pre(ref)
    for blk in enc.blocks:
        ref = blk(ref)
    assert torch.allclose(latent, enc.norm(ref), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_training_loss_from_masked_patches_equals_the_reference(norm_pix):
    mae = tiny_mae(norm_pix_loss=norm_pix)
    x = torch.randn(4, 12, 16, 16)
    noise = torch.rand(4, 16, generator=torch.Generator().manual_seed(3))
    loss_all, pred, mask = mae(x, noise=noise)
    loss_train, none, mask2 = mae(x, noise=noise, pred_all=False)
    assert none is None and torch.equal(mask, mask2)
    reference = mae.loss(x, pred, mask)  # full prediction, mask-weighted mean (MAE paper)
    assert torch.allclose(loss_all, reference, rtol=1e-5)
    assert torch.allclose(loss_train, reference, rtol=1e-5)
    # and the gradients agree
    g1 = torch.autograd.grad(loss_train, mae.decoder_pred.weight)[0]
    _, pred, mask = mae(x, noise=noise)
    g2 = torch.autograd.grad(mae.loss(x, pred, mask), mae.decoder_pred.weight)[0]
    assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)


def test_exported_mae_encoder_loads_in_finetuning_and_plain_timm(tmp_path):
    store, stats = make_store(tmp_path)
    out = tmp_path / "mae"
    assert train(cfg(store, stats, out, max_steps=2)) == 0
    model, meta = load_encoder(out / "encoder.safetensors")
    grid = meta["img_size"] // meta["patch_size"]
    fixed = sincos_pos_embed_2d(model.embed_dim, (grid, grid))
    assert torch.equal(model.pos_embed.detach(), fixed)
    plain = timm.create_model(
        meta["model_name"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out / "encoder.safetensors")),
        num_classes=0,
        **meta["model_kwargs"],
    )
    sd, ref = plain.state_dict(), model.state_dict()
    assert sd.keys() == ref.keys() and all(torch.equal(sd[k], ref[k]) for k in sd)
    x = torch.randn(1, 12, meta["img_size"], meta["img_size"])
    assert torch.allclose(plain.eval()(x), model.eval()(x))
    assert json.loads((out / "encoder.json").read_text())["method"] == "mae"
    assert MAE_HP["backbone"]["patch_size"] == meta["patch_size"]
