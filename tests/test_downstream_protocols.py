"""Downstream protocols are objects the fine-tuning loop asks, never names it compares."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from sarssl import vocabulary
from sarssl.downstream import finetune
from sarssl.downstream.protocols import PROTOCOLS, LinearProbe, protocol

ROOT = Path(__file__).resolve().parents[1]


def test_registry_vocabulary_and_schema_agree():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    enum = schema["properties"]["finetune"]["properties"]["protocols"]["items"]["enum"]
    assert tuple(PROTOCOLS) == vocabulary.PROTOCOLS
    assert set(enum) == set(PROTOCOLS)


def test_the_loop_knows_no_protocol_by_name():
    """No ``== "linear"``-style branch is left in the fine-tuning module."""
    tree = ast.parse(Path(finetune.__file__).read_text())
    names = set(PROTOCOLS)
    compared = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare)
        and any(isinstance(c, ast.Constant) and c.value in names for c in node.comparators)
    ]
    assert not compared, f"protocol names compared at lines {compared}"


def test_frozen_protocols_refuse_inits_without_a_frozen_encoder():
    import pytest
    import torch

    from sarssl.errors import SarsslError

    for name in ("linear", "knn", "decoder"):
        with pytest.raises(SarsslError, match=f"--protocol {name} cannot run --init unet"):
            protocol(name).check("unet")
        assert protocol(name).frozen and not protocol(name).augment
    for name in ("finetune", "knn", "decoder"):
        with pytest.raises(SarsslError, match=f"--protocol {name} cannot run --init pixel"):
            protocol(name).check("pixel")
    protocol("linear").check("pixel")  # the per-pixel control is a linear model
    protocol("linear").prepare(torch.nn.Linear(2, 2), "pixel")  # nothing to freeze
    assert isinstance(protocol("linear"), LinearProbe) and protocol("linear").convex
    assert not protocol("knn").trains and protocol("finetune").augment
    with pytest.raises(SarsslError, match="expected one of finetune, linear, knn, decoder"):
        protocol("lora")
