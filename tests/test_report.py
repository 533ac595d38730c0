"""The run report: one self-contained offline HTML page (no browser needed here)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gptwaves.model import GPT, GPTConfig
from gptwaves.record import RecordSpec, Recording, record
from gptwaves.stages.report import (
    _quantise,
    build_report,
    caption_from_stem,
    json_for_html,
    sanitize_fragment,
)
from gptwaves.sample import SamplingConfig

PWN = "<script>window.__pwned=1</script>"
ALERT = "<script>alert(1)</script>"
SVG_NS = "http://www.w3.org/2000/svg"  # a namespace name inside the page's JS, not a network resource
VOCAB = sorted(set("\n !'(),.;:=_<>/1abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
PROMPT = "\n" + PWN + " " + ALERT + " "


def _png(path: Path, seed: int = 0) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2.4, 1.6), dpi=60)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(np.random.default_rng(seed).normal(size=20).cumsum())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def _record(run: Path, iteration: int, seed: int, steps: int = 40) -> Path:
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=96, vocab_size=len(VOCAB), n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    model = GPT(cfg).eval()
    spec = RecordSpec(samples=3, steps=steps, prompt=PROMPT, taps=tuple(model.tap_names),
                      sampling=SamplingConfig(seed=seed), batch_size=2)
    meta = {"iteration": iteration, "weights_sha256": f"w{seed}", "config": cfg.to_dict()}
    return record(model, meta, VOCAB, spec, run / "recordings" / f"iter_{iteration:07d}.h5", progress=False)


def make_run(root: Path) -> Path:
    """A synthetic run directory with every input the report reads."""
    from gptwaves.figures.spelling import text_page_html

    run = root / "run"
    run.mkdir(parents=True)
    summary = {
        "preset": "smoke",
        "corpus_sha256": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        "timings": {"train": 12.5, "record": 3.25, "spelling": 95.0},
        "settings": {"spelling": {"samples": 1000, "prompt": "\n"}, "note": ALERT, "lr": 5e-4},
        "versions": {"gptwaves": "0.1.0", "torch": "2.5.0", "numpy": "2.1.0"},
        "checkpoints": [
            {"iteration": it, "train_loss": tl, "val_loss": vl,
             "waves": {"hook_embed": {"mean_abs_corr": 0.1, "lambda_max_share": 0.2, "participation_ratio": 30.0},
                       "blocks.1.hook_resid_post": {"mean_abs_corr": r, "lambda_max_share": 0.3,
                                                    "participation_ratio": 12.0}},
             "spelling": {"correct": {"mean": 8.0, "var": 8.0 * fc, "fano": fc, "q": fc - 1,
                                      "fano_ci": [fc - 0.05, fc + 0.05], "p_value": 0.01, "verdict": vc},
                          "misspelled": {"mean": 3.0, "var": 3.3, "fano": fm, "q": fm - 1,
                                         "fano_ci": [fm - 0.1, fm + 0.1], "p_value": 0.2, "verdict": "Poissonian"},
                          "error_rate": er, "clustering_excess": 1.02, "cascade_ratio": 1.1}}
            for it, tl, vl, fc, vc, fm, er, r in [
                (0, 4.17, 4.18, 1.02, "Poissonian", 0.98, 0.95, 0.081),
                (100, 2.5, 2.6, 0.71, "sub-Poissonian", 1.21, 0.31, 0.234),
            ]
        ],
        "findings": {
            "crossing_iteration": 57.5,
            "claims": [
                {"claim": "Correct-word counts become sub-Poissonian with training", "verdict": "supported",
                 "text": "F_correct falls from 1.02 to 0.71 (95% CI 0.66-0.76, p = 0.01) by iteration 100."},
                {"claim": "Misspellings become super-Poissonian", "verdict": "inconclusive",
                 "text": "F_misspelled = 1.21 <b>not</b> significant & so on."},
            ],
        },
    }
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"iter": i, "kind": "train", "loss": 4.2 * (i + 1) ** -0.12, "lr": 5e-4, "tokens_per_s": 1e5}
            for i in range(0, 200, 5)]
    rows += [{"iter": i, "kind": "eval", "train_loss": 4.2 * (i + 1) ** -0.12, "val_loss": 4.3 * (i + 1) ** -0.11}
             for i in (0, 50, 100, 199)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + '\n{"iter": 20')  # torn line
    _png(run / "figures" / "loss.png", 0)
    _png(run / "waves" / "figures" / "iter_0000100" / "correlation_compare.png", 1)
    _png(run / "waves" / "figures" / "order_parameters.png", 2)
    _png(run / "spelling" / "figures" / "fano.png", 3)
    _png(run / "interventions" / "clamp_space" / "word_lengths.png", 4)
    lex = {"the", "king", "a"}
    texts = ["\nthe king " + ALERT + " qzx the a", "\nzz the kingg a b"]
    (run / "spelling" / "iter_0000000.text.html").write_text(text_page_html(texts, lex, 1, 0))
    (run / "spelling" / "iter_0000100.text.html").write_text(
        '<section class="spelling-samples" data-iteration="100"><h3>Tampered</h3>'
        f'<pre class="sample">ok {PWN}<img src=x onerror="window.__pwned=1">'
        '<mark class="miss" onclick="window.__pwned=1">wrnog</mark> <a href="https://evil.example/">x</a>'
        "</pre></div></div></section><style>body{display:none}</style>")
    _record(run, 0, 0)
    _record(run, 100, 1)
    return run


def shared_run(tmp_path_factory) -> Path:
    """One synthetic run per test session (also used by the browser tests)."""
    root = tmp_path_factory.getbasetemp() / "report-shared"
    run = root / "run"
    if not (run / "recordings" / "iter_0000100.h5").exists():
        make_run(root)
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = shared_run(tmp_path_factory)
    out = build_report(run)
    return run, out, out.read_text(encoding="utf-8")


def test_report_is_written_atomically_in_place(report):
    run, out, html = report
    assert out == run / "report" / "index.html"
    assert html.startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]  # no temp files left behind


def test_report_is_self_contained(report):
    _, _, html = report
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, re.I)
    # the only URLs: the SVG namespace name in the JS, and the tampered link shown as escaped text
    rest = html.replace(SVG_NS, "").replace("&lt;a href=&quot;https://evil.example/&quot;&gt;", "")
    assert "http://" not in rest and "https://" not in rest
    assert "@import" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # the page's own inline script is allowed by hash; nothing else may run
    assert html.count("<script>") == 1


def test_report_contains_findings_table_and_provenance(report):
    _, _, html = report
    assert "Correct-word counts become sub-Poissonian with training" in html
    assert "F_correct falls from 1.02 to 0.71 (95% CI 0.66-0.76, p = 0.01) by iteration 100." in html
    assert "&lt;b&gt;not&lt;/b&gt; significant &amp; so on" in html  # claim text escaped
    assert 'class="badge ok">supported' in html and 'class="badge unk">inconclusive' in html
    assert html.index('id="findings"') < html.index('id="checkpoints"') < html.index('id="figures"')
    assert "57.5" in html  # crossing iteration
    assert "0.234" in html and "[0.66, 0.76]" in html and "sub-Poissonian" in html
    for s in ("torch", "2.5.0", "spelling.samples", "1000", "1 min 35 s", "smoke"):
        assert s in html


def test_report_embeds_every_figure_with_captions(report):
    _, _, html = report
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 6  # 5 figures + the training curves drawn from metrics.jsonl
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    for cap in ("Correlation matrices compared", "Fano factor across training", "Word-length distributions per condition",
                "Coherence order parameters across training", "iteration 100", "Overview"):
        assert cap in html
    for head in ("Training", "Waves", "Spelling", "Interventions"):
        assert f'<h3 class="group">{head}</h3>' in html
    training = html[html.index('id="training"'):html.index('id="figures"')]
    assert "<img" in training and (report[0] / "figures" / "training_curves.png").is_file()


def test_generated_text_never_appears_as_markup(report):
    _, _, html = report
    low = html.lower()
    assert "<script>alert" not in low and "<script>window" not in low
    assert "<img src=x" not in low and "<style>body" not in low
    assert not re.search(r"<[a-z][^<>]*\son\w+\s*=", low)  # no tag carries an event handler
    assert all(a.startswith('<a href="#') for a in re.findall(r"<a\s[^>]*>", low))  # only in-page links
    assert "&lt;a href=&quot;https://evil.example/&quot;&gt;" in html  # tampering shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text in the spelling samples
    assert '<mark class="miss">wrnog</mark>' in html
    assert html.count("<section") == html.count("</section>")


def test_explorer_data_is_embedded_and_decodes(report):
    run, _, html = report
    m = re.search(r'<script type="application/json" id="wx-data">(.*?)</script>', html, re.S)
    assert m
    raw = m.group(1)
    assert "<" not in raw and ">" not in raw and "&" not in raw
    data = json.loads(raw)
    assert [c["iteration"] for c in data["checkpoints"]] == [0, 100]
    c = data["checkpoints"][1]
    assert PWN in "".join(c["chars"])
    with Recording.open(run / "recordings" / "iter_0000100.h5") as rec:
        assert set(c["taps"]) == set(rec.taps)
        tap = "blocks.1.hook_resid_post"
        x = rec.waves(tap, samples=0, steps=slice(0, c["steps"]))
    t = c["taps"][tap]
    q = np.frombuffer(base64.b64decode(t["q"]), dtype=np.int8).reshape(c["steps"], t["C"])
    y = np.asarray(t["lo"]) + (q.astype(np.float64) + 127) * np.asarray(t["scale"])
    span = x.max(0) - x.min(0)
    assert np.all(np.abs(y - x) <= span / 254 * 0.51 + 1e-5 * np.abs(x).max())
    assert t["space_channel"] is None or 0 <= t["space_channel"] < t["C"]


def test_explorer_limits(tmp_path):
    run = tmp_path / "run"
    for i, it in enumerate((0, 10, 20, 30)):
        _record(run, it, i, steps=2)
    html = build_report(run, max_explorer_checkpoints=3, explorer_steps=10).read_text()
    data = json.loads(re.search(r'id="wx-data">(.*?)</script>', html, re.S).group(1))
    assert [c["iteration"] for c in data["checkpoints"]] == [0, 20, 30]  # evenly spread, first and last
    assert all(c["steps"] == 10 and len(c["chars"]) == 10 for c in data["checkpoints"])
    assert "".join(data["checkpoints"][0]["chars"]) == PROMPT[:10]


def test_missing_inputs_give_not_computed_sections(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    html = build_report(run).read_text()
    assert html.count("not computed") >= 8
    assert "wx-data" not in html.split("<script>")[0].split("</main>")[1] if "</main>" in html else True
    assert 'id="wx-data"' not in html


def test_partial_and_corrupt_inputs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text("{not json")
    (run / "metrics.jsonl").write_text('{"iter": 0, "kind": "train", "loss": 4.1}\n{"iter": 10, "kind": "train", "loss": 3.0}\ngarbage\n')
    (run / "recordings").mkdir()
    (run / "recordings" / "iter_0000000.h5").write_bytes(b"not hdf5")
    (run / "figures").mkdir()
    (run / "figures" / "bad.png").write_bytes(b"not a png")
    html = build_report(run).read_text()
    assert "summary.json" in html and "unreadable" in html
    training = html[html.index('id="training"'):html.index('id="figures"')]
    assert "<img" in training  # drawn from the readable rows of metrics.jsonl
    assert "not embedded" in html
    assert "iter_0000000.h5" in html  # the skipped recording is named


def test_summary_without_findings(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"preset": "quick", "checkpoints": [{"iteration": 5}]}))
    html = build_report(run).read_text()
    assert "Findings: not computed" in html
    assert "<td>5</td>" in html


def test_sanitize_fragment():
    frag = ('<section class="spelling-samples evil" data-iteration="7"><p onmouseover="x()">a &amp; b &lt;c&gt;</p>'
            '<pre class="sample"><span class="prompt">\n</span>w <mark class="miss" style="x">zz</mark>'
            "<script>window.__pwned=1</script><!-- c --><iframe src=//x></iframe>"
            '<span class="unscored">tail')
    out = sanitize_fragment(frag)
    assert out.startswith('<section class="spelling-samples" data-iteration="7"><p>a &amp; b &lt;c&gt;</p>')
    assert '<mark class="miss">zz</mark>' in out and '<span class="prompt">\n</span>' in out
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in out
    assert "&lt;iframe src=//x&gt;&lt;/iframe&gt;" in out
    assert "<script" not in out and "<iframe" not in out and "<!--" not in out and "style" not in out
    assert out.endswith('<span class="unscored">tail</span></pre></section>')  # balanced
    assert sanitize_fragment('x" data-iteration="a"><b>') == 'x&quot; data-iteration=&quot;a&quot;&gt;<b></b>'
    assert sanitize_fragment('<section data-iteration="1&quot; onclick=&quot;x">') == "<section></section>"


def test_json_for_html():
    s = json_for_html({"t": "</script><!-- & \u2028\u2029"})
    assert "<" not in s and ">" not in s and "&" not in s and "\u2028" not in s and "\u2029" not in s
    assert json.loads(s) == {"t": "</script><!-- & \u2028\u2029"}


def test_quantise_roundtrip():
    x = np.random.default_rng(0).normal(size=(50, 4)) * [1, 10, 0.01, 0]
    d = _quantise(x)
    q = np.frombuffer(base64.b64decode(d["q"]), dtype=np.int8).reshape(50, 4)
    y = np.asarray(d["lo"]) + (q + 127.0) * np.asarray(d["scale"])
    # each channel within half of its own quantisation step (its range / 254), plus the rounding of
    # lo and scale to 6 significant figures; one shared tolerance would exceed the whole range of
    # the small channels (a zeroed channel 2 passed it)
    ptp = np.ptp(x, axis=0)
    tol = ptp / 254 / 2 + 1e-6 * np.abs(x).max(axis=0) + 1e-12
    err = np.abs(y - x).max(axis=0)
    assert np.all(err <= tol), (err, tol)
    assert np.all(err[:3] > 0) and err[3] == 0  # quantised, not copied; the constant channel is exact
    # the codes span the int8 range on every channel that varies (no channel is flattened)
    assert list(q[:, :3].min(axis=0)) == [-127] * 3 and list(q[:, :3].max(axis=0)) == [127] * 3
    assert list(d["scale"][:3]) == pytest.approx(list(ptp[:3] / 254), rel=1e-5)


def test_captions():
    assert caption_from_stem("correlation_compare") == "Correlation matrices compared"
    assert caption_from_stem("acf_blocks.5.hook_resid_post") == "Auto-correlation functions, block 5 residual"
    assert caption_from_stem("word_lengths") == "Word-length distributions per condition"


def test_quantise_nan_and_constant_channels():
    x = np.zeros((5, 3))
    x[:, 1] = np.nan
    x[2, 2] = np.inf
    d = _quantise(x)
    assert all(np.isfinite(d["lo"])) and all(v > 0 for v in d["scale"])
    assert json.loads(json_for_html(d)) == d


# ------------------------------------------------------------------ the page from a template

def test_the_template_escapes_every_field_of_the_summary(tmp_path):
    """The page is a Jinja2 template with autoescaping on: markup in any field of summary.json
    (preset, tap names, claim titles and texts, settings, versions, the crossing's reason) is text."""
    run = tmp_path / "run"
    run.mkdir()
    bad = "<img src=x onerror=alert(1)>"
    summary = {
        "preset": bad, "corpus_sha256": bad, "hf": {"model": bad, "revisions": [{"step": 1, "revision": bad,
                                                                               "model": bad}]},
        "settings": {bad: bad}, "versions": {bad: bad}, "timings": {bad: 1.0},
        "checkpoints": [{"iteration": 100, "val_loss": 1.0,
                         "waves": {bad: {"mean_abs_corr": 0.5, "induced": {"mean_abs_corr": 0.4}}},
                         "spelling": {"correct": {"fano": 0.9, "verdict": bad}, "words": {"fano": 0.5},
                                      "cascade": {"verdict": bad}}}],
        "findings": {"crossing": {"reason": bad}, "claims": [
            {"id": 1, "claim": bad, "as_stated": {"verdict": bad, "text": bad + " iteration 100"},
             "beyond_null": {"verdict": "supported", "text": bad}}]},
        "calibration": {"claims": {"1": {"as_stated": {"text": bad}}}},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    html = build_report(run).read_text()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") >= 12
    # a Hugging Face suite's checkpoints are training steps, in the claims' sentences too
    assert "step 100" in html and "iteration 100" not in html and "<th>step</th>" in html


def test_report_module_writes_no_html():
    """stages/report.py prepares data; every tag of the page is in templates/report.html (no HTML
    in Python strings), and the template ships in the package."""
    import ast
    from importlib import resources

    import gptwaves.stages.report as rep

    tree = ast.parse(Path(rep.__file__).read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    tags = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs and re.search(r"<(/?[a-z][a-z0-9]*)(\s|>|/>)", n.value)]
    assert tags == []
    assert resources.files("gptwaves").joinpath("templates", "report.html").is_file()
    env = rep._environment()
    assert env.autoescape is True or env.autoescape("report.html")
