#!/usr/bin/env python3
"""Mutation check: break one rule of the statistical core on purpose and see that a test fails.

Each mutation below replaces one snippet of ``src/gptwaves`` (it must occur exactly once) in a
temporary copy of ``src/`` - never in the working tree - and runs the named tests against that copy
(``PYTHONPATH`` points at it). A mutation is *killed* when at least one of its tests fails, and
*survives* when they all pass: then no test checks the rule it breaks. *stale* means the snippet is
no longer in the code (update the list); *error* means pytest could not run (exit status 2-5).

The tests that killed a mutation are then run once more, together, on an unmutated copy: one that
fails there too is no evidence, so it is named and the mutations it killed are run again without it.
A mutation only counts as killed by a test that passes without it.

    python tools/mutation_check.py              # every mutation (a few minutes on 2 cores)
    python tools/mutation_check.py -k fano      # those whose id contains "fano"
    python tools/mutation_check.py --list       # ids and the tests each must fail

Exit status 0 when every selected mutation is killed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str  # relative to src/gptwaves
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest arguments (files or node ids, one -k): at least one test must fail
    why: str  # the behaviour it breaks, in words


MUTATIONS: list[Mutation] = [
    # ---- spelling: dispersion, permutation nulls and the claim rules (docs/method.md, Spelling errors
    # and Findings)
    Mutation("fano-p-ignored", "analysis/spelling_dispersion.py",
             "    if p < alpha and fano < 1:\n        verdict = \"sub-Poissonian\"\n"
             "    elif p < alpha and fano > 1:\n",
             "    if fano < 1:\n        verdict = \"sub-Poissonian\"\n    elif fano > 1:\n",
             ("tests/test_analysis_spelling.py", "-k", "dispersion"),
             "the index-of-dispersion verdict ignores its chi-square p-value"),
    Mutation("fano-one-sided", "analysis/spelling_dispersion.py",
             "p = float(min(1.0, 2.0 * min(stats.chi2.cdf(D, dof), stats.chi2.sf(D, dof))))",
             "p = float(min(1.0, stats.chi2.sf(D, dof)))",
             ("tests/test_analysis_spelling.py", "-k", "dispersion"),
             "the dispersion test is one-sided (sub-Poissonian counts never significant)"),
    Mutation("perm-p-wrong-tail", "analysis/spelling_nulls.py",
             "return float(min(1.0, 2.0 * min(ge, le))), int(null.size)",
             "return float(min(1.0, 2.0 * max(ge, le))), int(null.size)",
             ("tests/test_analysis_spelling.py", "tests/test_spelling_nulls.py", "-k",
              "source or clustered or cascade_detected"),
             "the two-sided permutation p-value takes the wrong tail (never significant)"),
    Mutation("excess-direction-inverted", "analysis/spelling_nulls.py",
             "verdict = (up if obs > med else down) if p < alpha else \"independent\"",
             "verdict = (down if obs > med else up) if p < alpha else \"independent\"",
             ("tests/test_analysis_spelling.py", "tests/test_spelling_nulls.py", "-k", "source or clustered"),
             "an excess over the permutation null is reported in the opposite direction"),
    Mutation("change-size-0.15", "analysis/spelling_claims.py",
             "lo, hi = d - _zc(alpha) * se, d + _zc(alpha) * se",
             "lo, hi = d - _zc(6 * alpha) * se, d + _zc(6 * alpha) * se",
             ("tests/test_spelling_rules.py", "-k", "size"),
             "claims 2 and 3 beyond the null: the change first -> last is 'supported' with size 0.15, not 0.025"),
    Mutation("change-ci-ignored", "analysis/spelling_claims.py",
             "toward = lo > 0 if want == \"rise\" else hi < 0",
             "toward = d > 0 if want == \"rise\" else d < 0",
             ("tests/test_spelling_claims.py", "-k", "change_rule"),
             "a change is 'supported' when its estimate points the claimed way, whatever its CI"),
    Mutation("across-p-ignored", "analysis/spelling_claims.py",
             "up = sum(r[\"z\"] > zc for r in rs)",
             "up = sum(r[\"z\"] > 0 for r in rs)",
             ("tests/test_spelling_claims.py", "-k", "across"),
             "every checkpoint with a positive excess counts as significantly above the null"),
    Mutation("holm-skipped", "analysis/spelling_claims.py",
             "if p_values[i] <= alpha / (m - r):",
             "if p_values[i] <= alpha:",
             ("tests/test_spelling_claims.py", "-k", "holm"),
             "claim 5's cascades are tested without Holm's correction over checkpoints"),
    # ---- trends across checkpoints (docs/method.md, Trends across checkpoints)
    Mutation("trend-p-ignored", "analysis/claims.py",
             "monotone = (\"rising\" if rho > 0 else \"falling\") if p < alpha else \"no trend\"",
             "monotone = (\"rising\" if rho > 0 else \"falling\")",
             ("tests/test_analysis_claims.py", "-k", "noise or few_monotone"),
             "a Spearman trend is called rising/falling whatever its p-value"),
    Mutation("trend-sign-inverted", "analysis/claims.py",
             "monotone = (\"rising\" if rho > 0 else \"falling\") if p < alpha else \"no trend\"",
             "monotone = (\"rising\" if rho < 0 else \"falling\") if p < alpha else \"no trend\"",
             ("tests/test_analysis_claims.py", "-k", "monotone_rise or planted"),
             "a rising trend is called falling"),
    Mutation("trend-gate-skipped", "analysis/claims.py",
             "if q[\"p_shape\"] >= alpha:", "if False:",
             ("tests/test_analysis_claims.py", "-k", "noise"),
             "a shape is named without the omnibus F test rejecting"),
    Mutation("trend-turn-p-ignored", "analysis/claims.py",
             "turn = q[\"p_turn\"] < alpha", "turn = True",
             ("tests/test_analysis_claims.py", "-k", "noise or planted or monotone"),
             "a turn is named without its quadratic term being significant"),
    # ---- coherence: the sample-shuffle surrogate and claim 1 (docs/method.md, Coherence)
    Mutation("surrogate-excess-sign", "analysis/surrogates.py",
             "\"excess\": obs - mean,", "\"excess\": mean - obs,",
             ("tests/test_waves_rules.py", "tests/test_waves_nulls.py", "-k", "planted or claim1_finds"),
             "the excess over the sample-shuffle surrogate has its sign inverted"),
    Mutation("surrogate-z-tail-inverted", "analysis/surrogates.py",
             "p = gaussian_tail(sign * z, B)", "p = gaussian_tail(-sign * z, B)",
             ("tests/test_waves_rules.py", "tests/test_waves_nulls.py", "-k", "planted or size"),
             "the surrogate test takes the wrong tail (less coherent than the surrogate counts as more)"),
    Mutation("surrogate-ci-ignored", "analysis/surrogates.py",
             "\"significant\": bool(B > 0 and p < alpha and ci_ok)}",
             "\"significant\": bool(B > 0 and p < alpha)}",
             ("tests/test_waves_rules.py", "-k", "size or null_cases or shared_gain or one_sample"),
             "an excess is significant without its confidence interval excluding zero"),
    Mutation("coherence-holm-skipped", "analysis/coherence_nulls.py",
             "adj = np.maximum.accumulate((m - np.arange(m)) * p[order])", "adj = p[order]",
             ("tests/test_waves_rules.py", "-k", "holm"),
             "the per-checkpoint surrogate p-values are not Holm-adjusted"),
    Mutation("coherence-up-ignores-p", "analysis/waves_claims.py",
             "t[\"rho\"] > 0 and t[\"p_value\"] < alpha", "t[\"rho\"] > 0",
             ("tests/test_waves_claims.py", "tests/test_waves_rules.py", "-k", "claim1 or build_up or rise_then_fall or significant_rise"),
             "claim 1 as stated counts any positive Spearman rho as a build-up"),
    # ---- the weak tests of the test-quality issue, now fixed (each mutation passed the old test)
    Mutation("quantise-zero-channel", "stages/report.py",
             "    q = np.clip(q, -127, 127).astype(np.int8)\n",
             "    q = np.clip(q, -127, 127).astype(np.int8)\n    q[:, 2:3] = -127\n",
             ("tests/test_report.py::test_quantise_roundtrip",),
             "the explorer's channel 2 is flattened to its minimum"),
    Mutation("metrics-drop-last-rows", "train.py",
             "    for line in text.splitlines():\n        row = _metrics_row(line)",
             "    for line in text.splitlines()[:-2]:\n        row = _metrics_row(line)",
             ("tests/test_faults.py::test_metrics_rows_that_are_not_objects_are_skipped",),
             "the last rows of the metrics log are dropped"),
    Mutation("fifo-opened", "io.py",
             "    if not stat.S_ISREG(st.st_mode):\n",
             "    if not stat.S_ISREG(st.st_mode) and not stat.S_ISFIFO(st.st_mode):\n",
             ("tests/test_faults.py::test_corpus_fifo_and_device_are_refused_at_once",),
             "a FIFO passes the regular-file check and is opened (the old test hung)"),
]


def _copy_src(dest: Path) -> Path:
    shutil.copytree(ROOT / "src", dest / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return dest / "src"


def _env(src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1",
               MPLBACKEND="Agg")
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _pytest(src: Path, tests: tuple[str, ...], stop_early: bool, timeout: float) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", "-rfE", "--no-header",
           *(["-x"] if stop_early else []), *tests]
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=_env(src), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "timed out"
    return r.returncode, r.stdout + r.stderr


def _failed(out: str) -> list[str]:
    return [ln.split()[1] for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR "))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only mutations whose id contains this text")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--no-baseline", action="store_true", help="do not rerun killing tests unmutated")
    ap.add_argument("--timeout", type=float, default=900, help="hang guard per pytest run, seconds")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if a.k in m.id]
    if a.list:
        for m in chosen:
            print(f"{m.id}: {m.file}: {m.why}\n    must fail: {' '.join(m.tests)}")
        return 0
    if not chosen:
        print(f"mutation_check: error: no mutation id contains {a.k!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gptwaves-mutants-") as tmp:
        tmp = Path(tmp)
        base = _copy_src(tmp / "base")
        probe = subprocess.run([sys.executable, "-c", "import gptwaves; print(gptwaves.__file__)"],
                               env=_env(base), capture_output=True, text=True, cwd=tmp)
        if not probe.stdout.strip().startswith(str(base)):
            print(f"mutation_check: error: gptwaves is imported from {probe.stdout.strip() or probe.stderr!r}, "
                  f"not from the copy {base}", file=sys.stderr)
            return 2
        def run(i: int, m: Mutation, deselect: tuple[str, ...] = ()) -> tuple[str, str, list[str]]:
            src = _copy_src(tmp / f"m{i}")
            path = src / "gptwaves" / m.file
            text = path.read_text()
            n = text.count(m.original)
            try:
                if n != 1:
                    return "stale", f"snippet found {n} times in src/gptwaves/{m.file}", []
                path.write_text(text.replace(m.original, m.mutated))
                rc, out = _pytest(src, (*m.tests, *(f"--deselect={t}" for t in deselect)), stop_early=True,
                                  timeout=a.timeout)
                failed = _failed(out)
                if rc == 1:
                    return "killed", ", ".join(failed[:3]) or "a test failed", failed
                if rc == 0:
                    return "SURVIVED", "every test passed", []
                return "error", f"pytest exit status {rc}: {out.strip().splitlines()[-1:]}", []
            finally:
                shutil.rmtree(src.parent)

        results = {}
        for i, m in enumerate(chosen):
            t0 = time.perf_counter()
            results[m.id] = (m, *run(i, m))
            print(f"{m.id:28s} {results[m.id][1]:9s} {time.perf_counter() - t0:6.1f} s  {results[m.id][2]}",
                  flush=True)
        killers = sorted({t for _, s, _, f in results.values() if s == "killed" for t in f})
        if killers and not a.no_baseline:
            # one unmutated run of every killing test: a test that fails there too is no evidence, so the
            # mutations it killed are run again without it
            rc, out = _pytest(base, tuple(killers), stop_early=False, timeout=a.timeout * 2)
            if rc not in (0, 1):
                print(f"mutation_check: error: the unmutated run did not complete:\n{out[-3000:]}", file=sys.stderr)
                return 2
            broken = tuple(_failed(out))
            print(f"baseline: {len(killers)} killing tests rerun unmutated"
                  + (f"; failing there too: {', '.join(broken)}" if broken else ", all pass"), flush=True)
            for i, m in enumerate(chosen):
                if results[m.id][1] == "killed" and set(results[m.id][3]) & set(broken):
                    t0 = time.perf_counter()
                    st, detail, failed = run(i, m, broken)
                    results[m.id] = (m, st, detail + f" (left out, failing unmutated too: {', '.join(broken)})",
                                     failed)
                    print(f"{m.id:28s} {st:9s} {time.perf_counter() - t0:6.1f} s  {results[m.id][2]}", flush=True)
        results = list(results.values())
    bad = [r for r in results if r[1] != "killed"]
    print(f"\n{len(results) - len(bad)} of {len(results)} mutations killed"
          + (": survived or not run: " + ", ".join(f"{m.id} ({s})" for m, s, _, _ in bad) if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
