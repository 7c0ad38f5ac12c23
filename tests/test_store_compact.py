"""Compact chip stores (``chips.dtype: uint16 | uint8``): the quantisation error bound, exact
no data, clipping, bytes per chip, and every reader (raw batches, load_chips, ChipStore.x,
statistics, pretraining's input) decoding to the same dB as the float16 path would."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sarssl.data.loaders import ChipBatches, decode_batch, load_chips
from sarssl.data.normalize import normalize_batch
from sarssl.data.store import DB_RANGES, ChipStore, StoreWriter, XCodec, write_store
from sarssl.errors import InputError, SarsslError
from sarssl.vocabulary import CHANNELS

C = len(CHANNELS)


def _in_range_chips(n, s, seed=0):
    """Random dB chips inside the default quantisation ranges, with no data and extremes."""
    rng = np.random.default_rng(seed)
    lo = np.array([DB_RANGES[ch.split("_")[0]][0] for ch in CHANNELS])
    hi = np.array([DB_RANGES[ch.split("_")[0]][1] for ch in CHANNELS])
    x = lo[None, :, None, None] + rng.uniform(size=(n, C, s, s)) * (hi - lo)[None, :, None, None]
    x[0, :, 0, 0] = lo  # the range ends are representable
    x[0, :, 0, 1] = hi
    x[1, 3, 1:3, 1:3] = np.nan  # no data in one channel
    x[2, :, s - 1, s - 1] = np.nan  # no data in every channel
    x[2, 0, s - 2, s - 2] = np.inf  # not finite: no data as well
    return x


def _store(root, x, dtype, **kw):
    n, _, s, _ = x.shape
    lc = np.zeros((n, s, s), np.uint8)
    tc = np.full((n, s, s), 10.0, np.float32)
    return write_store(root / dtype, x, lc, tc, area="t", dtype=dtype, **kw)


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_quantisation_error_is_at_most_half_a_step_and_nodata_is_exact(tmp_path, dtype):
    x = _in_range_chips(6, 8)
    st = ChipStore(_store(tmp_path, x, dtype))
    q = st.meta["quantisation"]
    codec = st.codec
    assert st.meta["dtype"] == dtype and isinstance(codec, XCodec)
    steps = np.iinfo(dtype).max - 1
    for c, ch in enumerate(CHANNELS):
        lo, hi = DB_RANGES[ch.split("_")[0]]
        assert q["offset"][c] == pytest.approx(lo)
        assert q["scale"][c] == pytest.approx((hi - lo) / steps, rel=1e-6)
        assert q["max_abs_error_db"][c] == pytest.approx(q["scale"][c] / 2)
    assert q["clipped"] == [0] * C  # everything lay inside the ranges
    dec = st.x[np.arange(6)]  # decoded float32 dB
    assert dec.dtype == np.float32
    # no data stays exactly no data, and only there
    assert np.array_equal(np.isnan(dec), ~np.isfinite(x))
    codes = st.stored("x")
    assert codes.dtype == np.dtype(dtype)
    assert (np.asarray(codes)[~np.isfinite(x)] == codec.nodata).all()
    # the documented bound: half a step (+ float32 rounding of the decode, < 6e-6 dB)
    err = np.abs(dec.astype(np.float64) - x)[np.isfinite(x)]
    scale = np.broadcast_to(np.asarray(q["scale"])[None, :, None, None], x.shape)[np.isfinite(x)]
    assert (err <= scale / 2 + 6e-6).all(), float((err - scale / 2).max())
    assert err.max() > 0.9 * scale.max() / 2  # the bound is tight (random values)
    if dtype == "uint16":  # finer than float16 (up to 0.0039-0.0078 dB)
        assert err.max() < 0.0005
    else:
        assert err.max() < 0.12


def test_uint8_halves_the_bytes_and_float16_still_reads(tmp_path):
    x = _in_range_chips(5, 8)
    sizes = {}
    for dtype in ("float16", "uint16", "uint8"):
        st = ChipStore(_store(tmp_path, x, dtype))
        sizes[dtype] = st.meta["bytes_per_chip_x"]
        assert (st.path / "x.npy").stat().st_size == pytest.approx(5 * sizes[dtype], abs=256)
    assert sizes["uint16"] == sizes["float16"] == sizes["uint8"] * 2 == C * 8 * 8 * 2
    f16 = ChipStore(tmp_path / "float16")
    assert f16.codec is None and "quantisation" not in f16.meta
    assert isinstance(f16.x, np.memmap) and f16.x.dtype == np.float16  # unchanged reader
    # a float16 store's raw batch is its float16 dB, untouched by decode_batch
    raw = ChipBatches(f16, batch_size=5, shuffle=False)[0]["x"]
    assert raw.dtype == torch.float16 and decode_batch(raw, f16.codec) is raw


def test_values_outside_the_range_are_clipped_and_counted(tmp_path):
    x = _in_range_chips(3, 4)
    x[0, 4, 0, 0] = 30.0  # vv above +15 dB
    x[1, 8, 1, 1] = -60.0  # vh below -45 dB
    st = ChipStore(_store(tmp_path, x, "uint8"))
    clipped = st.meta["quantisation"]["clipped"]
    assert clipped[4] == 1 and clipped[8] == 1 and sum(clipped) == 2
    assert st.x[0][4, 0, 0] == pytest.approx(15.0, abs=1e-4)
    assert st.x[1][8, 1, 1] == pytest.approx(-45.0, abs=1e-4)


def test_numpy_and_torch_decodes_are_bit_identical_and_readers_agree(tmp_path):
    x = _in_range_chips(10, 8, seed=2)
    st = ChipStore(_store(tmp_path, x, "uint16"))
    codes = np.array(st.stored("x"))
    a = st.codec.decode(codes)
    b = st.codec.decode_torch(torch.from_numpy(codes)).numpy()
    assert np.array_equal(a, b, equal_nan=True)
    # raw batches hold codes; ChipBatches.decode gives the same dB
    batch = ChipBatches(st, batch_size=10, shuffle=False)[0]
    assert batch["x"].dtype == torch.uint16
    assert np.array_equal(ChipBatches(st, batch_size=4).decode(batch["x"]).numpy(), a, True)
    # load_chips: raw -> float32 dB; with stats -> the one normalisation of the decoded dB
    raw = load_chips(st, arrays=("x",))["x"]
    assert raw.dtype == torch.float32 and np.array_equal(raw.numpy(), a, equal_nan=True)
    mean, std = np.full(C, -12.0, np.float32), np.full(C, 4.0, np.float32)
    stats = {"channels": list(CHANNELS), "mean": mean.tolist(), "std": std.tolist()}
    img = load_chips(st, arrays=("x",), stats=stats, chunk=3)["image"]
    assert torch.equal(img, torch.from_numpy(normalize_batch(a, mean, std)))
    assert torch.isfinite(img).all() and (img[2, :, 7, 7] == 0).all()  # no data -> 0
    # ChipStore.x decodes (the statistics and GeoTIFF export read it)
    assert np.array_equal(np.asarray(st.x[[1, 4]], dtype=np.float32), a[[1, 4]], True)


def test_channel_stats_of_a_compact_store_match_float16(tmp_path):
    from sarssl.data.chips import channel_stats

    x = _in_range_chips(10, 8, seed=3)
    x[np.isinf(x)] = np.nan  # a float16 store keeps inf, which its statistics would sum
    index = pd.DataFrame({"id": [f"c{i}" for i in range(10)], "split": ["train"] * 10})
    f16 = channel_stats([_store(tmp_path, x, "float16", index_df=index)], progress=False)
    u16 = channel_stats([_store(tmp_path, x, "uint16", index_df=index)], progress=False)
    assert np.allclose(f16["mean"], u16["mean"], atol=2e-3)
    assert np.allclose(f16["std"], u16["std"], atol=2e-3)


def test_pretraining_input_decodes_on_the_device_and_matches_the_float16_store(tmp_path):
    from sarssl.engine import SeededBatchOrder
    from sarssl.selfsup.batches import PretrainBatches, image_stream

    x = _in_range_chips(12, 8, seed=4)
    index = pd.DataFrame({"id": [f"c{i}" for i in range(12)], "split": ["train"] * 12})
    mean, std = np.full(C, -10.0, np.float32), np.full(C, 6.0, np.float32)
    out = {}
    for dtype in ("float16", "uint16"):
        data = PretrainBatches([str(_store(tmp_path, x, dtype, index_df=index))])
        order = SeededBatchOrder(data.n, 4, seed=1, block_rows=2)
        out[dtype] = list(image_stream(data, order, 0, 3, torch.device("cpu"), mean, std, {}))
        if dtype == "uint16":
            st = data.stores[0].store
            ref = normalize_batch(st.codec.decode(np.asarray(st.stored("x"))), mean, std)
            for i, b in zip(order.micro_batches(0, 3), out[dtype]):
                assert torch.equal(b, torch.from_numpy(ref[i]))
    # uint16 half step + float16 rounding (2**-6 dB for 32 <= |x| < 64 dB), normalised
    bound = (0.00046 + 2.0**-6) / 6.0 + 1e-6
    for a, b in zip(out["float16"], out["uint16"]):
        assert a.dtype == b.dtype == torch.float32
        assert torch.allclose(a, b, atol=bound), float((a - b).abs().max())


def test_mixed_quantisations_and_bad_dtypes_are_refused(tmp_path):
    from sarssl.selfsup.batches import PretrainBatches

    x = _in_range_chips(5, 4)
    a = _store(tmp_path, x, "uint16")
    b = tmp_path / "b"
    n, _, s, _ = x.shape
    lc, tc = np.zeros((n, s, s), np.uint8), np.zeros((n, s, s), np.float32)
    write_store(b, x, lc, tc, area="t", dtype="uint16")
    meta = json.loads((b / "store.json").read_text())
    meta["quantisation"]["offset"][0] -= 1.0
    (b / "store.json").write_text(json.dumps(meta))
    with pytest.raises(SarsslError, match="different offsets/scales"):
        PretrainBatches([str(a), str(b)])
    f16 = _store(tmp_path, x, "float16")
    with pytest.raises(SarsslError, match="differ in chip size .* or dtype"):
        PretrainBatches([str(a), str(f16)])
    with pytest.raises(SarsslError, match="expected one of"):
        StoreWriter(tmp_path / "w", 1, 4, dtype="int8")
    del meta["quantisation"]
    (b / "store.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="store.json.*quantisation"):
        ChipStore(b)


def test_sarssl_chips_accepts_dtype():
    import argparse

    from sarssl.data.chips import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    base = ["--composite", "c", "--landcover", "l", "--treecover", "t", "--area", "a"]
    base += ["--out-dir", "o"]
    assert p.parse_args(base).dtype == "float16"
    assert p.parse_args([*base, "--dtype", "uint8"]).dtype == "uint8"
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--dtype", "float32"])
