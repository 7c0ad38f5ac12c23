"""The method interface of self-supervised pretraining: the training loop knows no method.

A third method (the example of the ``sarssl.selfsup`` docstring) needs no edit of the
loop: registered, it trains through ``sarssl pretrain``, its hooks run in the documented
order, its diagnostics reach the metrics, and an interrupted run resumes to the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import sarssl.selfsup
from conftest import BACKBONE, cfg, losses, make_store
from sarssl.cli import main as cli_main
from sarssl.selfsup import pretrain
from sarssl.selfsup.registry import METHODS


def example_namespace() -> dict:
    """Run the example of the package docstring (the indented block after ``::``)."""
    block = sarssl.selfsup.__doc__.split("For example", 1)[1].split("::\n", 1)[1]
    namespace: dict = {"__name__": "denoise_example"}
    exec(
        compile(textwrap.dedent(block), "sarssl.selfsup example", "exec", dont_inherit=True),
        namespace,
    )
    return namespace


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("chips"))


def test_cli_method_choices_come_from_the_registry(monkeypatch):
    def usage():
        parser = argparse.ArgumentParser()
        pretrain.add_arguments(parser)
        return parser.format_usage()

    assert list(METHODS) == ["mae", "dino"] and "--method {mae,dino}" in usage()
    monkeypatch.setitem(METHODS, "denoise", example_namespace()["DenoiseMethod"])
    assert "--method {mae,dino,denoise}" in usage()


def test_the_training_loop_names_no_method():
    """pretrain.py neither imports a method's module nor compares with a method's name."""
    tree = ast.parse(Path(pretrain.__file__).read_text())
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    names = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    assert not set(names) & set(METHODS)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not modules & set(METHODS)


def test_a_new_method_trains_with_its_hooks_in_order(store, tmp_path, monkeypatch):
    ns = example_namespace()
    calls: list[tuple] = []

    class Recording(ns["DenoiseMethod"]):
        def begin_step(self, step):  # e.g. a weight-decay schedule
            calls.append(("begin", step.index))
            for group in step.optimizer.param_groups:
                group["weight_decay"] = 0.01 * (step.index + 1) if group["weight_decay"] else 0.0

        def loss(self, images, step, micro, trainable):
            calls.append(("loss", step.index, micro, tuple(images.shape)))
            return super().loss(images, step, micro, trainable)

        def clip_gradients(self, max_norm):  # the method decides how (DINO: per parameter)
            calls.append(("clip", max_norm))
            super().clip_gradients(max_norm)

        def before_optimizer_step(self, step):
            calls.append(("before", step.index))

        def after_optimizer_step(self, step):
            calls.append(("after", step.index))

        def diagnostics(self):
            return {"hook_calls": len(calls)}

    monkeypatch.setitem(METHODS, "denoise", Recording)
    hp = {
        "backbone": BACKBONE,
        "denoise": {
            "batch_size": 8,
            "epochs": 1,
            "accum_steps": 2,
            "noise_std": 0.3,
            "clip_grad": 2.5,
        },
    }
    assert pretrain.train(cfg(*store, tmp_path / "out", method="denoise", hp=hp, max_steps=2)) == 0
    micro = (4, 12, 16, 16)
    assert calls == [
        ("begin", 0),
        ("loss", 0, 0, micro),
        ("loss", 0, 1, micro),
        ("clip", 2.5),
        ("before", 0),
        ("after", 0),
        ("begin", 1),
        ("loss", 1, 0, micro),
        ("loss", 1, 1, micro),
        ("clip", 2.5),
        ("before", 1),
        ("after", 1),
    ]
    lines = [
        json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["hook_calls"] for r in lines] == [6, 12]
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["hparams"]["noise_std"] == 0.3 and run["config"]["hparams"]["lr"] == 1e-3
    assert json.loads((tmp_path / "out" / "encoder.json").read_text())["method"] == "denoise"
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)
    assert sorted(g["weight_decay"] for g in state["optimizer"]["param_groups"]) == [0.0, 0.02]


def test_a_new_method_trains_from_the_cli_and_resumes_exactly(store, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "denoise", example_namespace()["DenoiseMethod"])
    chips, stats = store
    hp = json.dumps({"backbone": BACKBONE, "denoise": {"batch_size": 8, "epochs": 2, "lr": 3e-3}})

    def sarssl_pretrain(out, *extra):
        return cli_main(
            [
                "pretrain",
                "--method",
                "denoise",
                "--chips-dir",
                str(chips),
                "--stats",
                str(stats),
                "--hparams",
                hp,
                "--seed",
                "5",
                "--out-dir",
                str(out),
                "--device",
                "cpu",
                "--threads",
                "1",
                *extra,
            ]
        )

    assert sarssl_pretrain(tmp_path / "full") == 0
    assert sarssl_pretrain(tmp_path / "part", "--stop-after-steps", "3") == 0
    assert not (tmp_path / "part" / "encoder.safetensors").exists()
    assert sarssl_pretrain(tmp_path / "part") == 0
    ls = losses(tmp_path / "full")
    assert len(ls) == 8 and np.isfinite(ls).all() and losses(tmp_path / "part") == ls

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha(tmp_path / "full" / "encoder.safetensors") == sha(
        tmp_path / "part" / "encoder.safetensors"
    )
