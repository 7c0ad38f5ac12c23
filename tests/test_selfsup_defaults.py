"""One owner of the pretraining defaults: the config dataclasses of sarssl.selfsup.

The workflow schema's ``pretrain.backbone`` / ``pretrain.METHOD`` defaults equal the
dataclass fields (no key missing on either side), the model constructors take their
defaults from the dataclasses, and ``sarssl pretrain`` without ``--hparams`` trains
exactly what the workflow trains for an unset configuration.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from conftest import make_store
from sarssl.cli import main as cli_main
from sarssl.errors import SarsslError
from sarssl.selfsup.dino import (
    DINO,
    DINOConfig,
    DINOHead,
    DINOLoss,
    MultiCropAugment,
    teacher_momentum,
)
from sarssl.selfsup.mae import MAEConfig, MaskedAutoencoder
from sarssl.selfsup.method import BackboneConfig
from sarssl.selfsup.pretrain import resolve_hparams
from sarssl.selfsup.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
PRETRAIN = SCHEMA["properties"]["pretrain"]["properties"]
MINIMAL = {
    "areas": {"a": {"bbox": [0, 0, 0.1, 0.1], "source": "simulate", "template": "S1B_rome"}},
    "pretrain": {"areas": ["a"]},
    "finetune": {"areas": ["a"]},
}

SECTIONS = {"backbone": BackboneConfig, **{name: cls.Config for name, cls in METHODS.items()}}


def schema_defaults(section: str) -> dict:
    props = PRETRAIN[section]["properties"]
    missing = sorted(k for k, v in props.items() if "default" not in v)
    assert not missing, f"pretrain.{section}: keys without a default {missing}"
    return {k: v["default"] for k, v in props.items()}


def workflow_hparams(method: str) -> dict:
    """What the workflow passes as ``--hparams`` for a config that sets no pretrain key:
    the validated config's (defaults filled) backbone merged with the method's section
    (workflow/rules/common.smk: pretrain_hparams, less the chip size it adds)."""
    cfg = copy.deepcopy(MINIMAL)
    validate(cfg, str(SCHEMA_PATH))
    hp = dict(cfg["pretrain"]["backbone"])
    hp.update(cfg["pretrain"][method])
    return hp


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_defaults_equal_the_dataclass_fields(section):
    fields = SECTIONS[section].defaults()
    schema = schema_defaults(section)
    assert sorted(set(fields) - set(schema)) == [], (
        f"fields missing from the schema's pretrain.{section}"
    )
    assert sorted(set(schema) - set(fields)) == [], (
        f"schema keys of pretrain.{section} missing from the dataclass"
    )
    differ = {
        k: (schema[k], fields[k])
        for k in fields
        if schema[k] != fields[k] or type(schema[k]) is not type(fields[k])
    }
    assert not differ, f"pretrain.{section}: (schema, dataclass) defaults differ: {differ}"


def test_every_registered_method_has_a_schema_section_and_vocabulary_entry():
    from sarssl.vocabulary import PRETRAIN_METHODS

    runtime = {
        "areas",
        "methods",
        "checkpoint_every",
        "snapshot_every",
        "deterministic",
        "backbone",
    }
    assert set(PRETRAIN) - runtime == set(METHODS)
    assert PRETRAIN["methods"]["items"]["enum"] == list(METHODS) == PRETRAIN["methods"]["default"]
    assert tuple(METHODS) == PRETRAIN_METHODS


def test_the_dataclass_defaults_are_a_valid_config():
    cfg = copy.deepcopy(MINIMAL)
    cfg["pretrain"]["backbone"] = BackboneConfig.defaults()
    for name, cls in METHODS.items():
        cfg["pretrain"][name] = cls.Config.defaults()
    validate(cfg, str(SCHEMA_PATH))


def _defaults(fn) -> dict:
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_model_constructors_take_their_defaults_from_the_dataclasses():
    m, d = MAEConfig(), DINOConfig()
    mae = _defaults(MaskedAutoencoder.__init__)
    for key in ("mask_ratio", "decoder_dim", "decoder_depth", "decoder_heads", "norm_pix_loss"):
        assert mae[key] == getattr(m, key), key
    dino = _defaults(DINO.__init__)
    for key in (
        "head_hidden_dim",
        "head_bottleneck_dim",
        "head_out_dim",
        "student_temp",
        "teacher_temp",
        "warmup_teacher_temp",
        "warmup_teacher_temp_epochs",
        "center_momentum",
    ):
        assert dino[key] == getattr(d, key), key
    loss = _defaults(DINOLoss.__init__)
    assert (
        loss["out_dim"] == d.head_out_dim
        and loss["warmup_teacher_temp_epochs"] == d.warmup_teacher_temp_epochs
    )
    head = _defaults(DINOHead.__init__)
    assert (
        (head["hidden_dim"], head["bottleneck_dim"], head["out_dim"])
        == (256, 64, 1024)
        == (d.head_hidden_dim, d.head_bottleneck_dim, d.head_out_dim)
    )
    aug = _defaults(MultiCropAugment.__init__)
    assert (aug["n_local"], aug["global_scale"], aug["local_scale"]) == (
        d.local_crops,
        d.global_scale,
        d.local_scale,
    )
    assert (aug["speckle_looks"], aug["speckle_p"], aug["channel_drop_p"]) == (
        d.speckle_looks,
        d.speckle_p,
        d.channel_drop_p,
    )
    assert _defaults(teacher_momentum)["base"] == d.momentum_teacher


@pytest.mark.parametrize("method", sorted(METHODS))
def test_resolved_defaults_are_the_workflows(method):
    assert resolve_hparams(method, {}) == workflow_hparams(method)
    # the workflow's own --hparams resolves to itself: nothing is filled in behind its back
    assert resolve_hparams(method, workflow_hparams(method)) == workflow_hparams(method)


def test_bad_values_are_refused_when_resolving():
    with pytest.raises(SarsslError, match="epochs must be >= 1"):
        resolve_hparams("mae", {"mae": {"epochs": 0}})
    with pytest.raises(SarsslError, match="lr='fast'"):
        resolve_hparams("dino", {"lr": "fast"})
    with pytest.raises(SarsslError, match="expected one of"):
        resolve_hparams("simclr", {})
    assert dataclasses.is_dataclass(MAEConfig) and MAEConfig.__dataclass_params__.frozen


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cli_without_hparams_trains_the_schema_defaults(tmp_path, method):
    store, stats = make_store(tmp_path)
    out = tmp_path / "out"
    rc = cli_main(
        [
            "pretrain",
            "--method",
            method,
            "--chips-dir",
            str(store),
            "--stats",
            str(stats),
            "--seed",
            "3",
            "--out-dir",
            str(out),
            "--device",
            "cpu",
            "--max-steps",
            "1",
            "--threads",
            "1",
        ]
    )
    assert rc == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["hparams"] == workflow_hparams(method)
    meta = json.loads((out / "encoder.json").read_text())
    b = BackboneConfig()
    assert meta["model_name"] == b.model_name
    assert {
        k: meta["model_kwargs"][k] for k in ("patch_size", "embed_dim", "depth", "num_heads")
    } == {
        "patch_size": b.patch_size,
        "embed_dim": b.embed_dim,
        "depth": b.depth,
        "num_heads": b.num_heads,
    }
