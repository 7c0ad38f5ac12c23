"""Per-pixel control vs a contextual proxy on the land-cover chips of a finished run.

    python benchmarks/pixel_control.py WORKDIR [--areas rome chimoio] [--out control.json]

For every fine-tuning chip store ``WORKDIR/results/chips/AREA`` (stores whose land cover is
all ignore, e.g. an unlabelled pretraining area, are skipped), a linear discriminant
(shared covariance, class priors; fitted in numpy) is trained on the labelled pixels of the
*training* chips (100 % of the labels, or the ``--fraction`` subset of ``fractions.json``)
and scored as land-cover mIoU / overall accuracy on every labelled pixel of the *test*
chips, with the workflow's own definition of mIoU (:func:`sarssl.downstream.evaluation.
scores_from_confusion`: IoU averaged over the classes present in the test labels or the
predictions). Three feature sets, the same classifier:

- ``pixel``: the 12 composite channels of the pixel (no spatial context: the control of
  issue #14);
- ``context5`` / ``context9``: the channels plus their 5x5 / 9x9 box means and local
  standard deviations inside the chip (36 features): a crude proxy that shows how much
  information the neighbourhood carries beyond the pixel. A model with spatial context
  (U-Net, ViT) should reach at least this.

Deterministic: the training pixels are subsampled (``--max-train-pixels``) with ``--seed``.
Prints a Markdown table and optionally writes the numbers as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

FEATURES = {"pixel": 0, "context5": 5, "context9": 9}


def chip_features(x: np.ndarray, window: int) -> np.ndarray:
    """(N, C, S, S) dB -> (N, F, S, S): the channels, plus box mean and local std in a
    ``window`` x ``window`` neighbourhood (inside each chip, reflected at its edges)."""
    x = np.asarray(x, dtype=np.float32)
    if not window:
        return x
    size = (1, 1, window, window)
    mean = ndimage.uniform_filter(x, size=size, mode="reflect")
    sq = ndimage.uniform_filter(x * x, size=size, mode="reflect")
    std = np.sqrt(np.maximum(sq - mean * mean, 0.0))
    return np.concatenate([x, mean, std], axis=1)


class LinearDiscriminant:
    """Gaussian classes with one shared covariance (LDA), fitted by moments."""

    def fit(self, x: np.ndarray, y: np.ndarray, shrinkage: float = 1e-3) -> LinearDiscriminant:
        x = np.asarray(x, dtype=np.float64)
        self.mu_x = x.mean(0)
        self.sd_x = x.std(0) + 1e-6
        z = (x - self.mu_x) / self.sd_x
        self.classes = np.unique(y)
        mu = np.stack([z[y == c].mean(0) for c in self.classes])
        resid = z - mu[np.searchsorted(self.classes, y)]
        cov = resid.T @ resid / len(z)
        cov = (1 - shrinkage) * cov + shrinkage * np.eye(cov.shape[0])
        prec = np.linalg.inv(cov)
        prior = np.array([(y == c).mean() for c in self.classes])
        self.w = mu @ prec
        self.b = -0.5 * np.einsum("ij,ij->i", self.w, mu) + np.log(prior)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mu_x) / self.sd_x
        return self.classes[np.argmax(z @ self.w.T + self.b, axis=1)]


def _pixels(store, rows: np.ndarray, window: int, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, F) and labels (n,) of every labelled pixel of ``rows``."""
    feats, labels = [], []
    for start in range(0, len(rows), 64):
        r = rows[start : start + 64]
        f = chip_features(np.asarray(store.x[r]), window)
        lc = np.asarray(store.landcover[r])
        f = np.moveaxis(f, 1, -1).reshape(-1, f.shape[1])
        lc = lc.reshape(-1)
        ok = lc != ignore
        feats.append(f[ok])
        labels.append(lc[ok])
    return np.concatenate(feats), np.concatenate(labels)


def evaluate_area(
    chips_dir: Path, fraction: float | None, max_train: int, seed: int
) -> dict[str, dict] | None:
    """Scores of every feature set on one chip store (None for a store without labels)."""
    import torch

    from sarssl.data.store import ChipStore
    from sarssl.downstream.evaluation import scores_from_confusion
    from sarssl.vocabulary import IGNORE_INDEX, N_LANDCOVER_CLASSES, WORLDCOVER_NAMES

    store = ChipStore(chips_dir)
    train = store.rows("train", fraction=fraction) if fraction else store.rows("train")
    test = store.rows("test")
    if not len(train) or not len(test):
        print(f"{chips_dir}: no train or no test chips; skipped", file=sys.stderr)
        return None
    if not (np.asarray(store.landcover[train]) != IGNORE_INDEX).any():
        print(f"{chips_dir}: no land-cover labels (unlabelled area); skipped", file=sys.stderr)
        return None
    rng = np.random.default_rng(seed)
    out = {}
    for name, window in FEATURES.items():
        t0 = time.perf_counter()
        xtr, ytr = _pixels(store, train, window, IGNORE_INDEX)
        good = np.isfinite(xtr).all(1)
        xtr, ytr = xtr[good], ytr[good]
        if len(ytr) > max_train:
            pick = rng.choice(len(ytr), max_train, replace=False)
            xtr, ytr = xtr[pick], ytr[pick]
        clf = LinearDiscriminant().fit(xtr, ytr)
        xte, yte = _pixels(store, test, window, IGNORE_INDEX)
        bad = ~np.isfinite(xte)
        if bad.any():  # no-data pixels: the training mean (they still count as errors)
            xte = np.where(bad, clf.mu_x[None, :], xte)
        pred = clf.predict(xte)
        k = N_LANDCOVER_CLASSES
        cm = np.bincount(yte.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
        scores = scores_from_confusion(torch.from_numpy(cm))
        out[name] = {
            "miou": round(scores["miou"], 4),
            "overall_accuracy": round(scores["overall_accuracy"], 4),
            "iou": {n: round(v, 4) for n, v in zip(WORLDCOVER_NAMES, scores["iou"]) if v == v},
            "n_train_chips": int(len(train)),
            "n_test_chips": int(len(test)),
            "n_train_pixels": int(len(ytr)),
            "n_test_pixels": int(len(yte)),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("workdir", type=Path, help="run directory holding results/chips/AREA")
    p.add_argument("--areas", nargs="*", default=None, help="areas (default: every store)")
    p.add_argument(
        "--fraction", type=float, default=None, help="label fraction (default: all train chips)"
    )
    p.add_argument("--max-train-pixels", type=int, default=300_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the scores as JSON here")
    args = p.parse_args(argv)
    root = args.workdir / "results" / "chips"
    if not root.is_dir():
        print(f"{root}: not a directory (run the workflow's chips rule first)", file=sys.stderr)
        return 2
    areas = args.areas or sorted(d.name for d in root.iterdir() if (d / "store.json").is_file())
    if not areas:
        print(f"{root}: no chip store", file=sys.stderr)
        return 2
    results = {}
    for area in areas:
        res = evaluate_area(root / area, args.fraction, args.max_train_pixels, args.seed)
        if res is not None:
            results[area] = res
    print("| area | features | train chips | test chips | mIoU | overall accuracy |")
    print("| --- | --- | --- | --- | --- | --- |")
    for area, res in results.items():
        for name, r in res.items():
            print(
                f"| {area} | {name} | {r['n_train_chips']} | {r['n_test_chips']} | "
                f"{r['miou']:.3f} | {r['overall_accuracy']:.3f} |"
            )
    if args.out:
        from sarssl.io import write_json

        write_json(args.out, {"fraction": args.fraction or 1.0, "areas": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
