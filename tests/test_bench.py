"""Smoke tests of the benchmark suite: every bench runs at toy sizes and returns well-formed rows.

No timing assertions: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import json
import math

import pytest

from gptwaves import bench
from gptwaves.bench import common
from gptwaves.bench.train import DEFAULT_VARIANTS

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16)
KEYS = {"figure", "value", "unit", "baseline", "ratio", "target", "ok", "machine", "notes", "bench"}


def check_rows(rows, bench_name):
    assert rows, "a bench returned no rows"
    for r in rows:
        assert KEYS <= set(r), r
        assert r["bench"] == bench_name
        assert isinstance(r["figure"], str) and r["figure"]
        assert isinstance(r["machine"], str) and "torch" in r["machine"]
        assert r["ok"] in (True, False, None)
        assert "bench failed" not in r["figure"], r["notes"]
        for k in ("value", "baseline", "ratio"):
            v = r[k]
            assert v is None or (isinstance(v, (int, float)) and math.isfinite(v)), (k, r)
        if isinstance(r["value"], float) and isinstance(r["baseline"], float) and r["baseline"]:
            assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
        if r["ok"] is not None:
            assert r["target"]
    json.dumps(rows)  # serialisable as written by --out
    return rows


def figures(rows):
    return [r["figure"] for r in rows]


def test_machine_info():
    m = common.machine_info()
    for k in ("cpu", "cores", "torch", "threads", "date", "summary"):
        assert m[k] not in (None, "")
    assert m["cores"] >= 1 and m["threads"] >= 1


def test_matmul_peak_positive():
    assert common.matmul_peak(n=64, repeats=2) > 0


def test_train_bench_tiny(corpus_path, one_thread):
    rows = check_rows(bench.run("train", corpus=corpus_path, steps=2, warmup=1,
                                model_overrides=dict(TINY, batch_size=4), peak_n=64, peak_repeats=2,
                                raise_errors=True), "train")
    f = figures(rows)
    assert any(x.startswith("matmul peak fp32") for x in f) and any(x.startswith("matmul peak bf16") for x in f)
    assert "train tok/s baseline (nanoGPT-style fp32)" in f
    assert any("shipped paper preset" in x for x in f)  # the preset's own precision is marked
    assert any(x.startswith("train MFU") for x in f)
    diffs = {r["figure"]: r["value"] for r in rows if "max |diff|" in r["figure"]}
    assert len(diffs) == len(DEFAULT_VARIANTS) - 1
    # same init, batches and dropout masks: gptwaves fp32 follows the baseline's loss curve exactly
    assert diffs["train loss max |diff| gptwaves-fp32 vs baseline"] < 1e-4


def test_baseline_matches_gptwaves_forward():
    """The bench's independent baseline model computes the same function as gptwaves.model.GPT."""
    import torch

    from gptwaves.bench.train import BaselineGPT

    cfg = common.paper_train_config(**TINY, dropout=0.0)
    ours = common.make_model(cfg, 20, seed=3).eval()
    base = BaselineGPT(cfg.model_config(20)).eval()
    base.load_state_dict(ours.state_dict())
    x = torch.randint(20, (2, 16))
    y = torch.randint(20, (2, 16))
    assert torch.allclose(ours(x, y)[0], base(x, y)[0], atol=1e-5)


def test_record_bench_tiny(one_thread):
    rows = check_rows(bench.run("record", samples=2, steps_in=6, steps_long=24, mem_samples=(1, 2), mem_steps=3,
                                repeats=1, stride=8, model_overrides=TINY, peak_n=64, raise_errors=True),
                      "record")
    f = " | ".join(figures(rows))
    for part in ("recording (a) vs naive (c)", "recording (a) vs plain sampling (b)",
                 "full-window step rate", "newest position only", "GELU in place", "stride=8 vs crop", "peak RSS"):
        assert part in f
    gelu = next(r for r in rows if "GELU in place" in r["figure"])
    assert "difference of any tap or logit 0.0e+00" in gelu["notes"]  # bit-identical
    mem = next(r for r in rows if "peak RSS" in r["figure"])
    assert mem["value"] > 0 and mem["baseline"] > 0


def test_waves_bench_tiny():
    pytest.importorskip("statsmodels")
    rows = check_rows(bench.run("waves", taps=3, samples=3, steps=40, channels=8, repeats=1, acf_samples=2,
                                nlags=10, raise_errors=True), "waves")
    acf = next(r for r in rows if "ACF" in r["figure"])
    assert acf["value"] > 0 and acf["baseline"] > 0
    assert "max |diff|" in acf["notes"]
    assert float(acf["notes"].split("max |diff| ")[1]) < 1e-8  # FFT ACF agrees with statsmodels


def test_synthetic_recording_is_readable(tmp_path):
    from gptwaves.bench.waves import write_recording
    from gptwaves.record import Recording

    p = write_recording(tmp_path / "r.h5", taps=3, S=2, T=10, C=4)
    with Recording.open(p) as rec:
        assert rec.taps == ["hook_embed", "blocks.0.hook_resid_post", "ln_final.hook_normalized"]
        assert rec.waves(rec.taps[1]).shape == (2, 10, 4)
        assert rec.input_chars().shape == (2, 10)


def test_spelling_bench_tiny(corpus_path, one_thread):
    rows = check_rows(bench.run("spelling", corpus=corpus_path, short=(4, 12), long=(3, 30), batch_size=2,
                                n_boot=20, model_overrides=TINY, raise_errors=True), "spelling")
    assert len(rows) == 5
    assert all(r["value"] >= 0 for r in rows)
    limit = next(r for r in rows if "matmul limit" in r["figure"])  # sampling (i) against its FLOP limit
    sampling = next(r for r in rows if r["figure"].startswith("spelling (i)") and "sampling +" in r["figure"])
    assert 0 < limit["value"] <= sampling["value"] and limit["baseline"] > 0
    assert limit["ratio"] == pytest.approx(limit["value"] / limit["baseline"])
    assert limit["target"] is None  # reduced sizes: the target is for 1000 x 128 only


@pytest.mark.slow
def test_e2e_bench_tiny(corpus_path):
    rows = check_rows(bench.run("e2e", corpus=corpus_path, raise_errors=True,
                                extra_args=["--max-iters", "4", "--record-samples", "2", "--record-steps", "8",
                                            "--spelling-samples", "4", "--spelling-length", "16"]), "e2e")
    assert rows[0]["value"] > 0, rows[0]["notes"]
    assert rows[0]["ok"] is None  # reduced sizes: no target


def test_failed_bench_becomes_a_row(monkeypatch):
    from gptwaves.bench import waves

    def boom(**kw):
        raise RuntimeError("kaput")

    monkeypatch.setattr(waves, "run", boom)
    rows = bench.run("waves")
    assert rows[0]["ok"] is False and "kaput" in rows[0]["notes"]


def test_unknown_bench():
    with pytest.raises(ValueError):
        bench.run("nope")


def test_format_table_and_json(tmp_path):
    rows = [common.make_row("a figure", 1234.5, "tok/s", baseline=1000.0, target=">= 1.3x", ok=False),
            common.make_row("another", None, "s", notes="skipped")]
    for r in rows:
        r["machine"] = "M"
    t = bench.format_table(rows, notes=True)
    lines = t.splitlines()
    assert lines[0].split() == ["figure", "value", "baseline", "ratio", "target", "machine"]
    assert "1.23x" in t and "MISS" in t and "skipped" in t
    out = bench.write_json(tmp_path / "b.json", rows, {"summary": "M"}, "all", True)
    doc = json.loads(out.read_text())
    assert doc["machine"] == {"summary": "M"} and len(doc["rows"]) == 2


def test_flop_formulas_equal_torch_flop_counter():
    """The budget's FLOP counts equal torch's own count of the matmuls gptwaves runs (the window
    forward past the context with the last block for the newest position only and with the whole
    block, and one cached token), plus attention's q k^T and att v, which torch's counter does not
    see in the CPU attention kernel and which are written out here: 4 x queries x keys x channels."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gptwaves.bench.common import cached_token_flops, window_forward_flops
    from gptwaves.model import GPT, GPTConfig, KVCache

    L, T, C, B = 3, 16, 24, 3
    m = GPT(GPTConfig(block_size=T, vocab_size=11, n_layer=L, n_head=2, n_embd=C, dropout=0.0)).eval()
    idx = torch.randint(11, (B, T), generator=torch.Generator().manual_seed(0))

    def counted(fn) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops()

    def window():
        return m(idx, taps=m.tap_names, tap_positions=slice(-1, None), logits_last_only=True)

    assert counted(window) + B * 4 * ((L - 1) * T * T + T) * C == window_forward_flops(m, B, T)
    m.newest_only_last_block = False  # this model only
    assert counted(window) + B * 4 * L * T * T * C == window_forward_flops(m, B, T)
    del m.newest_only_last_block
    cache = KVCache(m.config, B, T, "cpu", torch.float32)
    m(idx[:, :5], cache=cache)
    step = counted(lambda: m(idx[:, 5:6], cache=cache, logits_last_only=True))
    assert step + B * 4 * L * 6 * C == B * cached_token_flops(m, 6)


def test_sweep_bench_row_is_per_member_over_plain_reproduce(monkeypatch):
    """The sweep bench's arithmetic and failure row (the commands themselves run end to end in
    tests/test_sweep.py)."""
    from gptwaves.bench import sweep as sb

    times = iter([(10.0, None), (30.0, None)])
    calls = []
    monkeypatch.setattr(sb, "_timed", lambda cmd, timeout: (calls.append(cmd), next(times))[1])
    row = sb.run(quick=True)[0]
    assert row["value"] == 15.0 and row["baseline"] == 10.0 and row["ratio"] == 1.5
    assert calls[0][3] == "reproduce" and calls[1][3] == "sweep" and "seed=1337,1338" in calls[1]
    monkeypatch.setattr(sb, "_timed", lambda cmd, timeout: (1.0, "boom"))
    bad = sb.run(quick=True)[0]
    assert bad["ok"] is False and "boom" in bad["notes"]


def test_profile_bench_quick(one_thread):
    """Every profiled step gives its time, a matrix-product share in [0, 100] % and its top operators,
    whose shares sum to at most 100 %; training's top list holds a matmul and an overhead operator."""
    rows = check_rows(bench.run("profile", quick=True, raise_errors=True), "profile")
    for step in ("train", "record", "sample"):
        mine = [r for r in rows if r["figure"].startswith(f"profile {step}:")]
        assert mine[0]["unit"] == "ms" and mine[0]["value"] > 0
        assert 0 <= mine[1]["value"] <= 100
        tops = mine[2:]
        assert tops and sum(r["value"] for r in tops) <= 100 + 1e-6
    train_notes = [r["notes"] for r in rows if r["figure"].startswith("profile train: aten")]
    assert any("matmul" in n for n in train_notes) and any("overhead" in n for n in train_notes)


def test_profile_classifies_matrix_products():
    from gptwaves.bench.profile import is_matmul

    assert is_matmul("aten::mm") and is_matmul("aten::addmm") and is_matmul("aten::bmm")
    assert not is_matmul("aten::add_") and not is_matmul("aten::native_layer_norm") and not is_matmul("aten::copy_")


def test_cli_offers_every_bench():
    from gptwaves.cli import bench as bench_cmd

    choices = next(p for p in bench_cmd.params if p.name == "which").type.choices
    assert list(choices) == ["all", *bench.BENCHES]


def _budget_obj(record_seconds: float, fp32=100.0) -> dict:
    """A hand-made budget object: training 1000 s at the median rate against 200 s at the peak,
    recordings and spelling against 100 and 10 s, waves and calibrate with no limit."""
    def counted(seconds, at):
        return {"flops": 1e12, "peak": "fp32", "seconds_at_peak": at, "seconds": seconds,
                "gap": None if at is None else seconds / at}
    train = {**counted(30.0, None if fp32 is None else 200.0), "seconds_at_median_rate": 1000.0, "iterations": 10,
             "tokens": 1000, "logged_rates": 10, "median_tokens_per_s": 1.0}
    return {"peaks": {"fp32_gflops": fp32, "bf16_gflops": fp32}, "total": {"seconds": 0.0, "invocations": 1},
            "stages": {"train": train,
                       "record": {**counted(record_seconds, None if fp32 is None else 100.0), "files": 2,
                                  "window_forwards": 5},
                       "spelling": {**counted(40.0, None if fp32 is None else 10.0), "checkpoints": 2},
                       "waves": {"flops": None, "peak": None, "seconds_at_peak": None, "seconds": 60.0, "gap": None},
                       "calibrate": {"flops": None, "peak": None, "seconds_at_peak": None, "seconds": 300.0,
                                     "gap": None}}}


def test_budget_end_to_end_is_the_whole_run_against_the_counted_limits():
    """docs/method.md, Publishing results: training at its median rate plus every other stage, against
    the counted stages at their peaks; a counted stage measured below its limit (reused, its time
    not on record) leaves the gap out; without peaks there is no limit."""
    from gptwaves.bench.budget import E2E_TARGET, budget_rows, end_to_end

    e = end_to_end(_budget_obj(250.0))
    assert e == {"seconds": 1000.0 + 250 + 40 + 60 + 300, "seconds_at_peak": 310.0,
                 "gap": pytest.approx(1650 / 310), "incomplete": []}
    row = budget_rows(_budget_obj(250.0))[-1]
    assert row["figure"] == "budget end to end against the limit" and row["ratio"] == pytest.approx(1650 / 310)
    assert row["baseline"] == 310.0 and row["ok"] is False and str(E2E_TARGET) in row["target"]
    fast = _budget_obj(250.0)
    for k in ("waves", "calibrate"):
        fast["stages"][k]["seconds"] = 0.0
    fast["stages"]["train"]["seconds_at_median_rate"] = 200.0
    fast["stages"]["spelling"]["seconds"] = 10.0
    assert budget_rows(fast)[-1]["ok"] is True  # (200 + 250 + 10) / 310 = 1.48
    reused = end_to_end(_budget_obj(7.0))
    assert reused["incomplete"] == ["record"] and reused["gap"] is None
    row = budget_rows(_budget_obj(7.0))[-1]
    assert row["ratio"] is None and row["ok"] is None and "incomplete: record" in row["notes"]
    assert end_to_end(_budget_obj(250.0, fp32=None))["gap"] is None
    assert "peaks not measured" in budget_rows(_budget_obj(250.0, fp32=None))[-1]["notes"]
