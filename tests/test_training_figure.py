"""The fine-tuning training-curves figure reads the lr search of run.json files."""

from __future__ import annotations

import json

import pytest

from sarssl.cli import main as cli_main
from sarssl.errors import InputError
from sarssl.figures.training import read_runs, training_curves


def _run(path, task, init, area, lr, scores):
    search = [
        {
            "lr": cand,
            "best_epoch": 1,
            "best_val_score": 0.5,
            "history": [
                {"epoch": e, "step": 5 * (e + 1), "train_loss": 1.0, "val": {key: v + k}}
                for e, v in enumerate(scores)
            ],
        }
        for k, cand in enumerate((1e-3, 3e-3))
        for key in (["miou"] if task == "landcover" else ["rmse"])
    ]
    cfg = {"task": task, "init_label": init, "protocol": "finetune", "finetune_area": area}
    path.write_text(json.dumps({"config": {**cfg, "fraction": 1.0}, "lr": lr, "lr_search": search}))
    return str(path)


def test_training_curves_draw_every_candidate_and_mark_the_selected(tmp_path):
    paths = [
        _run(tmp_path / f"{t}_{i}_{a}.json", t, i, a, 3e-3, [0.2, 0.4, 0.5])
        for t in ("landcover", "treecover")
        for i in ("scratch", "mae")
        for a in ("rome", "chimoio")
    ]
    runs = read_runs(paths)
    fig = training_curves(runs)
    axes = fig.axes
    assert len(axes) == 4  # 2 tasks x 2 areas
    ax = axes[0]
    lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 4  # 2 inits x 2 lr candidates
    widths = sorted(ln.get_linewidth() for ln in lines)
    assert widths[0] < widths[-1]  # the selected lr is drawn thicker
    out = tmp_path / "fig.png"
    assert cli_main(["plot", "training-curves", "--runs", *paths, "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.with_suffix(".pdf").is_file()


def test_training_curves_name_a_bad_run_file(tmp_path):
    bad = tmp_path / "run.json"
    bad.write_text("{}")
    with pytest.raises(InputError, match="run.json.*not a fine-tuning run.json"):
        read_runs([str(bad)])
