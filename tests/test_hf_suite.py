"""The whole analysis across the training revisions of a Hugging Face model suite (offline).

Tiny GPT-NeoX (Pythia's architecture) and GPT-2 models with a byte-level BPE tokenizer trained
here on the synthetic corpus are trained a few steps and saved as the revisions ``step0``,
``step5`` and ``step20``; ``reproduce`` runs over them end to end.
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from gptwaves import api  # noqa: E402
from gptwaves.cli import main as cli_main  # noqa: E402
from gptwaves.errors import GptwavesError  # noqa: E402
from gptwaves.hf import PYTHIA_STEPS, HFModel, log_spaced, step_of, suite_revisions  # noqa: E402
from gptwaves.io import read_json  # noqa: E402
from gptwaves.record import Recording  # noqa: E402
from gptwaves.stages.common import select_checkpoints  # noqa: E402

STEPS = (0, 5, 20)
HAVE_LEXICON = importlib.util.find_spec("spellchecker") is not None
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _tokenizer(text: str, d: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator([text], trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>")


def _config(arch: str, vocab: int):
    from transformers import GPT2Config, GPTNeoXConfig

    if arch == "neox":
        return GPTNeoXConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=48, rotary_pct=0.25,
                             bos_token_id=0, eos_token_id=0)
    return GPT2Config(vocab_size=vocab, n_positions=48, n_embd=16, n_layer=2, n_head=2, bos_token_id=0,
                      eos_token_id=0)


def build_suite(root: Path, text: str, arch: str) -> Path:
    """Train a tiny model a few steps on ``text``; save revisions step0, step5, step20 under ``root``."""
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(text, root)
    ids = torch.tensor(tok.encode(text), dtype=torch.long)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(arch, len(tok)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(max(STEPS) + 1):
        if step in STEPS:
            d = root / f"step{step}"
            model.save_pretrained(d)
            tok.save_pretrained(d)
        if step == max(STEPS):
            break
        start = torch.randint(0, len(ids) - 33, (8,), generator=g)
        x = torch.stack([ids[s : s + 32] for s in start.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return root


@pytest.fixture(scope="module")
def neox_suite(tmp_path_factory, synthetic_text):
    with _one_thread():
        return build_suite(tmp_path_factory.mktemp("neox"), synthetic_text, "neox")


@pytest.fixture(scope="module")
def gpt2_suite(tmp_path_factory, synthetic_text):
    with _one_thread():
        return build_suite(tmp_path_factory.mktemp("gpt2"), synthetic_text, "gpt2")


class _one_thread:
    def __enter__(self):
        self.n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


def _lexicon(tmp: Path) -> list[str]:
    if HAVE_LEXICON:
        return []
    p = tmp / "words.txt"
    p.write_text("the\nand\nking\nthou\nof\nmy\nlord\n")
    return ["--lexicon", str(p)]


CLI_SIZES = ["--record-samples", "4", "--record-steps", "24", "--spelling-samples", "24", "--spelling-length",
             "40", "--surrogates", "4", "--quiet"]


@pytest.fixture(scope="module")
def neox_run(neox_suite, tmp_path_factory):
    """The whole pipeline over the 3 revisions, through the CLI (a folder of folders)."""
    out = tmp_path_factory.mktemp("runs") / "neox"
    extra = _lexicon(out.parent)
    with _one_thread():
        t0 = time.perf_counter()
        rc = cli_main(["reproduce", "--hf-model", str(neox_suite), "--out", str(out), *CLI_SIZES, *extra])
        assert rc == 0
    return out, time.perf_counter() - t0, extra


# ------------------------------------------------------------------------------ revisions


def test_step_names_and_pythia_log_schedule(tmp_path):
    assert [step_of(s) for s in ("step1000", "checkpoint-500", "iter_0001000", "rev_step7", "42", "pythia-70m",
                                 "main")] == [1000, 500, 1000, 7, 42, None, None]
    assert len(PYTHIA_STEPS) == 154 and PYTHIA_STEPS[:3] == (0, 1, 2) and PYTHIA_STEPS[-1] == 143000
    assert PYTHIA_STEPS[10:12] == (512, 1000)
    picked = log_spaced(PYTHIA_STEPS, 12)
    assert len(picked) == 12 and picked[0] == 0 and picked[-1] == 143000 and picked == sorted(set(picked))
    x = np.log1p(picked[1:])
    assert np.diff(x).std() / np.diff(x).mean() < 0.5  # roughly even in log(1 + step)
    revs = suite_revisions("EleutherAI/pythia-70m", "log:6")  # offline: the schedule, not the hub
    assert [r.revision for r in revs][0] == "step0" and [r.name for r in revs][-1] == "iter_0143000"
    assert [r.step for r in suite_revisions("EleutherAI/pythia-70m", "step1000,step0")] == [0, 1000]
    assert suite_revisions("gpt2")[0].name == "hf-gpt2"  # one model without a step: no iteration
    with pytest.raises(GptwavesError, match="Pythia"):
        suite_revisions("gpt2", "log")
    with pytest.raises(GptwavesError, match="training step of .*main"):
        suite_revisions("EleutherAI/pythia-70m", "main,step1000")
    a, b = tmp_path / "a", tmp_path / "b"
    for p in (a, b):
        p.mkdir()
        (p / "config.json").write_text("{}")
    with pytest.raises(GptwavesError, match="training step"):
        suite_revisions(f"{a},{b}")


def test_folder_of_folders_comma_list_and_selection(neox_suite):
    revs = suite_revisions(str(neox_suite))
    assert [r.step for r in revs] == list(STEPS) and [r.name for r in revs][0] == "iter_0000000"
    same = suite_revisions(",".join(str(neox_suite / f"step{s}") for s in reversed(STEPS)))
    assert [(r.model, r.step) for r in same] == [(r.model, r.step) for r in revs]
    assert [r.step for r in suite_revisions(str(neox_suite), "step20,step0")] == [0, 20]
    assert [r.step for r in suite_revisions(str(neox_suite), "log:2")] == [0, 20]
    src = api.ModelSource(hf_model=str(neox_suite))
    assert [n for n, _ in select_checkpoints(neox_suite, "last", src)] == ["iter_0000020"]
    assert [r.step for _, r in select_checkpoints(neox_suite, "5", src)] == [5]


def test_special_tokens_decode_to_newline(neox_suite):
    m = HFModel(str(neox_suite / "step0"), step=0)
    eos = m.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert m.vocab[eos] == "\n"
    assert m.meta()["iteration"] == 0 and m.meta()["weights_sha256"].startswith("hf-local:")
    assert any(len(v) > 1 for v in m.vocab)  # a sub-word vocabulary


# ------------------------------------------------------------------------------ recording


def test_neox_hidden_states_equal_full_forward(neox_suite, tmp_path):
    src = api.ModelSource(hf_model=str(neox_suite / "step20"))
    (path,) = api.record_run(tmp_path / "run", "all",
                             api.RecordSettings(samples=2, steps=60, prompt="\nThe king ", batch_size=2,
                                                sampling=api.SamplingConfig(seed=3)), src, progress=False)
    assert path.name == "iter_0000020.h5"
    m = HFModel(str(neox_suite / "step20"))
    with Recording.open(path) as rec:
        assert rec.iteration == 20 and rec.meta["model_config"]["revision"] is None
        assert rec.meta["checkpoint_source"] == str(neox_suite / "step20")
        toks = torch.tensor(rec.tokens())
        bs = m.config.block_size
        assert toks.shape[1] > bs  # crop beyond the 48-token context is exercised
        with torch.no_grad():
            for j in range(toks.shape[1] - 1):
                out = m.model(input_ids=toks[:, max(0, j - bs + 1) : j + 1], output_hidden_states=True)
                for i, tap in enumerate(rec.taps):
                    np.testing.assert_allclose(rec.waves(tap)[:, j], out.hidden_states[i][:, -1].numpy(),
                                               atol=2e-5, rtol=1e-4)


def test_float16_streamed_batches_and_tap_subset(neox_suite, tmp_path, monkeypatch):
    """Peak memory is one batch: the recorder asks the model for batch_size samples at a time and
    writes each batch to its own part file; waves are stored as float16."""
    sizes = []
    orig = HFModel.generate_batch

    def spy(self, prompt_ids, steps, batch_size, *a, **kw):
        sizes.append(batch_size)
        return orig(self, prompt_ids, steps, batch_size, *a, **kw)

    monkeypatch.setattr(HFModel, "generate_batch", spy)
    src = api.ModelSource(hf_model=str(neox_suite / "step5"))
    (path,) = api.record_run(tmp_path / "run", "all",
                             api.RecordSettings(samples=7, steps=10, batch_size=2, dtype="float16",
                                                taps=("hidden.0", "hidden.2")), src, progress=False)
    assert sizes == [2, 2, 2, 1]
    with Recording.open(path) as rec:
        assert rec.taps == ["hidden.0", "hidden.2"]
        assert rec.wave_dataset("hidden.2").dtype == np.float16 and rec.waves("hidden.2").shape[0] == 7
        assert rec.wave_dataset("hidden.2").chunks[0] == 1


# ------------------------------------------------------------------------------ end to end


def test_reproduce_over_revisions_end_to_end(neox_run):
    out, seconds, extra = neox_run
    s = read_json(out / "summary.json")
    assert [c["iteration"] for c in s["checkpoints"]] == list(STEPS)
    assert s["hf"]["model"] and [r["step"] for r in s["hf"]["revisions"]] == list(STEPS)
    assert all(c["waves"] and c["spelling"] for c in s["checkpoints"])
    assert {c["id"] for c in s["findings"]["claims"]} == {1, 2, 3, 4, 5}
    assert s["settings"]["train"] is None
    sp = read_json(out / "spelling" / "iter_0000020.json")
    if not extra:
        assert sp["settings"]["lexicon"].startswith("pyspellchecker-")
    # spelling counts characters of the decoded sub-word text: prompt + L + M characters
    texts = read_json(out / "spelling" / "iter_0000020.samples.json")["texts"]
    assert len(texts) == 24 and all(len(t) == 1 + 40 + 16 for t in texts)
    html = (out / "report" / "index.html").read_text()
    assert "step (iteration)" in html and "step 20" in html and "iteration 20" not in html
    with Recording.open(out / "recordings" / "iter_0000005.h5") as rec:
        assert rec.meta["iteration"] == 5 and rec.meta["checkpoint_source"].endswith("step5")
    assert (out / "waves" / "repeatability.json").is_file()
    print(f"reproduce over 3 revisions: {seconds:.1f} s")


@pytest.mark.slow
def test_gpt2_suite_reproduce_from_comma_separated_folders(gpt2_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("GPTWAVES_FIGURES", "none")  # numbers only: the neox run's figures are tested
    from gptwaves.reproduce import AnalysisSettings, reproduce_hf
    from gptwaves.stages.waves import WavesSettings

    folders = ",".join(str(gpt2_suite / f"step{s}") for s in reversed(STEPS))
    lex = tmp_path / "w.txt"
    lex.write_text("the\nand\nking\nthou\n")
    an = AnalysisSettings(record_samples=3, record_steps=16, spelling_samples=12, spelling_length=30,
                          repeat_seeds=1, record_taps=("hidden.0", "hidden.2"), record_dtype="float16",
                          lexicon=str(lex), waves=WavesSettings(n_surrogates=4, n_boot=20))
    with _one_thread():
        s = reproduce_hf(folders, None, tmp_path / "run", analysis=an, device="cpu", progress=False)
    assert [c["iteration"] for c in s["checkpoints"]] == list(STEPS)
    assert set(s["checkpoints"][-1]["waves"]) == {"hidden.0", "hidden.2"}
    assert s["settings"]["spelling"]["lexicon"] == str(lex)
    assert s["findings"]["crossing"] is not None or s["findings"]["claims"]
    with Recording.open(tmp_path / "run" / "recordings" / "iter_0000020.h5") as rec:
        assert rec.wave_dataset("hidden.2").dtype == np.float16


def _no_internals(text: str) -> None:
    for word in ("True", "False", "None", "nan"):
        assert f" {word}" not in text and f"{word}," not in text and f"{word}." not in text, text


def test_input_floor_is_hidden0_and_the_beyond_verdict_is_decided(neox_run, capsys):
    """docs/method.md, "Coherence against its floors": the input floor of a Hugging Face model is
    its embedding output hidden.0, so claims 1 and 4 are judged against a real floor."""
    out, _, _ = neox_run
    s = read_json(out / "summary.json")
    claims = {c["id"]: c for c in s["findings"]["claims"]}
    b1, b4 = claims[1]["beyond_null"], claims[4]["beyond_null"]
    assert b1["numbers"]["tap"] == "hidden.2" and b1["numbers"]["input_tap"] == "hidden.0"
    floor = b1["numbers"]["input_floor"]
    assert floor and floor["ci"] and floor["excess"] is not None
    assert b1["numbers"]["parts"]["above_input_floor"] in (True, False)  # compared, not missing
    assert b1["numbers"]["focus_minus_input"]["ci"][0] is not None
    assert b1["verdict"] != "inconclusive" and "at the input floor hidden.0" in b4["text"]
    last = s["checkpoints"][-1]["waves"]
    floor_row = [c["waves"]["hidden.0"]["induced"]["mean_abs_corr"] for c in s["checkpoints"]]
    with capsys.disabled():
        print(f"\ninput floor hidden.0 (induced mean |R| by step {list(STEPS)}): "
              f"{[round(v, 3) for v in floor_row]}; excess at the last step {floor['excess']:.3f} "
              f"[{floor['ci'][0]:.3f}, {floor['ci'][1]:.3f}] vs {b1['numbers']['last']['excess']:.3f} at hidden.2; "
              f"beyond-the-null verdicts: claim 1 {b1['verdict']}, claim 4 {b4['verdict']}")
    assert last["hidden.0"]["surrogate"]["mean_abs_corr"]["excess"] == floor["excess"]
    for c in claims.values():  # sentences for people, on the training-step axis
        for part in ("as_stated", "beyond_null"):
            _no_internals(c[part]["text"])
            assert "iteration" not in c[part]["text"], c[part]["text"]
    assert "the input floor hidden.0" in b1["text"] and "step 20" in b1["text"]
    html = (out / "report" / "index.html").read_text()
    assert "hidden.0, induced" in html and "small character-level GPT" not in html
    assert "<th>step</th>" in html


def test_focus_tap_is_the_deepest_whatever_the_order():
    from gptwaves.stages.common import floor_tap, focus_tap, input_floor

    assert focus_tap(["hidden.6", "hidden.0"]) == "hidden.6"
    assert focus_tap(["hidden.10", "hidden.9", "hidden.0"]) == "hidden.10"
    assert focus_tap(["blocks.10.hook_resid_post", "hook_embed", "blocks.9.hook_resid_post",
                      "ln_final.hook_normalized"]) == "blocks.10.hook_resid_post"
    assert focus_tap(["ln_final.hook_normalized", "hook_embed"]) == "hook_embed"
    assert input_floor(["hidden.6", "hidden.0"]) == "hidden.0"
    assert input_floor(["blocks.1.hook_resid_post", "hook_embed"]) == "hook_embed"
    assert input_floor(["hidden.6"]) is None and floor_tap(["hidden.6"]) == "hidden.0"


def test_no_input_floor_is_said_in_words():
    from gptwaves.analysis.waves_claims import waves_claims

    cks = [{"iteration": i, "taps": {"hidden.2": {}}} for i in (0, 5, 20)]
    c1, c4 = waves_claims(cks, "hidden.2", None)
    assert "no input floor" in c1["beyond_null"]["text"] and c1["beyond_null"]["verdict"] == "inconclusive"
    assert "input floor (not recorded)" in c4["beyond_null"]["text"]
    for c in (c1, c4):
        _no_internals(c["beyond_null"]["text"])


def _suite_with(neox_suite, tmp_path, name, change):
    suite = tmp_path / "suite"
    shutil.copytree(neox_suite, suite)
    bad = suite / name
    shutil.copytree(suite / "step20", bad)
    change(bad)
    return suite


@pytest.mark.parametrize("what, change, words", [
    ("broken weights", lambda d: (d / "model.safetensors").write_bytes(b"not a safetensors file"),
     "not a valid safetensors"),
    ("no tokenizer", lambda d: [(d / f).unlink() for f in ("tokenizer.json",)], "no tokenizer"),
    ("no weights", lambda d: (d / "model.safetensors").unlink(), "no weights file"),
    ("other width", lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"hidden_size": 16', '"hidden_size": 32')), "width 32"),
])
def test_every_revision_is_checked_before_the_first_is_recorded(neox_suite, tmp_path, capsys, what, change, words):
    suite = _suite_with(neox_suite, tmp_path, "step30", change)
    run = tmp_path / "run"
    rc = cli_main(["record", "--hf-model", str(suite), "--run", str(run), "--samples", "2", "--steps", "6",
                   "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and err[0].startswith("gptwaves: error:"), err
    assert "step30" in err[0] and words in err[0], err[0]
    assert not list((run / "recordings").glob("*.h5")) if (run / "recordings").exists() else True  # nothing yet


def test_a_broken_revision_keeps_what_was_recorded(neox_suite, tmp_path, capsys):
    suite = tmp_path / "suite"
    shutil.copytree(neox_suite, suite)
    run = tmp_path / "run"
    args = ["record", "--hf-model", str(suite), "--run", str(run), "--samples", "2", "--steps", "6", "--quiet"]
    assert cli_main(args) == 0
    shutil.copytree(suite / "step20", suite / "step30")
    (suite / "step30" / "model.safetensors").write_bytes(b"x" * 64)
    capsys.readouterr()
    assert cli_main(args) != 0
    assert "step30" in capsys.readouterr().err
    for s in STEPS:
        with Recording.open(run / "recordings" / f"iter_{s:07d}.h5") as rec:
            assert rec.n_samples == 2


@pytest.mark.parametrize("args, words", [
    (["--preset", "quick"], "--preset applies"),
    (["--max-iters", "5", "--train-seed", "1"], "--max-iters, --train-seed apply"),
    (["--corpus", __file__], "--corpus applies"),  # an existing file (a missing one is refused as missing)
    (["--precision", "bf16"], "--precision applies"),
    (["--waves-boot", "50"], "--waves-boot"),
])
def test_options_the_source_ignores_are_refused(tmp_path, capsys, args, words):
    rc = cli_main(["reproduce", "--hf-model", str(tmp_path / "suite"), "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "r").exists()


def test_native_options_refused_without_hf_model(tmp_path, capsys):
    for args, words in ((["--dtype", "bfloat16"], "--dtype applies to --hf-model"),
                        (["--revisions", "step0"], "--revisions needs --hf-model"),
                        (["--waves-boot", "50"], "--waves-ci bca")):
        rc = cli_main(["reproduce", "--out", str(tmp_path / "r"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc != 0 and len(err) == 1 and words in err[0], err
    assert not (tmp_path / "r").exists()


def test_help_shows_every_default():
    import click

    from gptwaves.cli import cli

    cmd = cli.commands["reproduce"]
    ctx = click.Context(cmd, info_name="reproduce")
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.is_flag:
            assert "default" in p.get_help_record(ctx)[1].lower(), p.opts
    helps = {p.name: p.get_help_record(ctx)[1] for p in cmd.params if isinstance(p, click.Option)}
    assert "--hf-model 64]" in helps["record_samples"] and "--hf-model 256 tokens]" in helps["record_steps"]
    assert "--hf-model 1000]" in helps["spelling_samples"]


def test_bfloat16_model_keeps_float32_recordings(neox_suite, tmp_path):
    src = api.ModelSource(hf_model=str(neox_suite / "step20"), hf_dtype="bfloat16")
    (path,) = api.record_run(tmp_path / "run", "all", api.RecordSettings(samples=2, steps=8, batch_size=2), src,
                             progress=False)
    (ref,) = api.record_run(tmp_path / "ref", "all", api.RecordSettings(samples=2, steps=8, batch_size=2),
                            api.ModelSource(hf_model=str(neox_suite / "step20")), progress=False)
    with Recording.open(path) as a, Recording.open(ref) as b:
        assert a.wave_dataset("hidden.2").dtype == np.float32
        assert a.meta["weights_sha256"].endswith("+bfloat16") and a.meta["weights_sha256"] != b.meta["weights_sha256"]
        x, y = a.waves("hidden.0")[:, :1], b.waves("hidden.0")[:, :1]  # same prompt: embeddings agree to bf16
        np.testing.assert_allclose(x, y, atol=0.02 * np.abs(y).max())


def test_local_fingerprint_is_content_not_mtime(neox_suite, tmp_path, monkeypatch):
    from gptwaves.hf import fingerprint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a = neox_suite / "step5"
    b = tmp_path / "copy"
    b.mkdir()
    for f in a.iterdir():  # a copy without -p: new mtimes, same content
        shutil.copyfile(f, b / f.name)
    fa = fingerprint(str(a), None)
    assert fa == fingerprint(str(b), None) and fa.startswith("hf-local:")
    cache = read_json(tmp_path / "cache" / "gptwaves" / "hf-file-sha256.json")
    assert str((b / "model.safetensors").resolve()) in cache
    cfg = b / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    assert fingerprint(str(b), None) != fa  # content changed (size and mtime too): checksum redone


def test_progress_moves_within_a_batch(neox_suite):
    m = HFModel(str(neox_suite / "step5"))
    seen = []
    m.generate_batch(m.encode("\n"), 7, 2, api.SamplingConfig(seed=0), taps=["hidden.0"],
                     generator=torch.Generator().manual_seed(0), on_step=lambda k, n: seen.append((k, n)))
    assert seen == [(k, 7) for k in range(1, 8)]
    from gptwaves.record import _step_progress

    class Bar:  # the part of tqdm / LineProgress the recorder uses
        n, shown = 8, []

        def update(self, k):
            self.n += k
            self.shown.append(self.n)

    bar = Bar()
    step = _step_progress(bar, 4)  # a batch of 4 samples after 8 finished ones
    for k in range(1, 21):
        step(k, 20)
    assert bar.shown == [8.4, 8.8, 9.2, 9.6, 10.0, 10.4, 10.8, 11.2, 11.6, 12.0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    """The subprocesses' environment: one thread, this checkout's sources, and no figures (these runs
    are compared with the reference run by their numbers; its figures are tested with it)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "GPTWAVES_FIGURES": "none", "PYTHONPATH": os.pathsep.join(
        [SRC, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]])}


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(neox_suite, neox_run, tmp_path):
    ref, _, extra = neox_run
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gptwaves", "reproduce", "--hf-model", str(neox_suite), "--out", str(out),
           *CLI_SIZES, *extra]
    p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "recordings" / "iter_0000000.h5"
    # the kill is decided by an event (the first revision's recording is finished: its .json appears),
    # with two revisions and every later stage still to run; the clock is only a hang guard
    guard = time.monotonic() + 900
    while not first.with_suffix(".json").exists() and p.poll() is None and time.monotonic() < guard:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert first.with_suffix(".json").exists(), "the first revision was never recorded"
    assert p.returncode == -signal.SIGKILL, f"finished (rc {p.returncode}) before it could be killed"
    stamp = first.stat().st_mtime_ns
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert first.stat().st_mtime_ns == stamp  # finished work was kept, not redone
    for s in STEPS:
        name = f"iter_{s:07d}.h5"
        with Recording.open(out / "recordings" / name) as a, Recording.open(ref / "recordings" / name) as b:
            assert np.array_equal(a.tokens(), b.tokens())
            np.testing.assert_allclose(a.waves("hidden.2"), b.waves("hidden.2"), atol=1e-6)
    a, b = read_json(out / "summary.json"), read_json(ref / "summary.json")
    assert [c["spelling"]["correct"]["fano"] for c in a["checkpoints"]] == \
        [c["spelling"]["correct"]["fano"] for c in b["checkpoints"]]


@pytest.mark.slow
def test_torchrun_gloo_shards_samples_rank0_writes(neox_suite, neox_run, tmp_path):
    ref, _, extra = neox_run
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "gptwaves", "reproduce", "--hf-model", str(neox_suite),
           "--out", str(out), "--device", "cpu", *CLI_SIZES, *extra]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = read_json(out / "summary.json"), read_json(ref / "summary.json")
    assert [c["iteration"] for c in a["checkpoints"]] == list(STEPS)
    for s in STEPS:
        name = f"iter_{s:07d}"
        with Recording.open(out / "recordings" / f"{name}.h5") as x, Recording.open(ref / "recordings" / f"{name}.h5") as y:
            assert np.array_equal(x.tokens(), y.tokens())
        assert read_json(out / "spelling" / f"{name}.samples.json")["texts"] == \
            read_json(ref / "spelling" / f"{name}.samples.json")["texts"]


def test_hub_revisions_are_checked_from_their_configs(monkeypatch):
    """Hub revisions (no network here): each config is fetched alone and the file list checked."""
    import huggingface_hub
    from transformers import AutoConfig, GPTNeoXConfig

    from gptwaves.hf import Revision, check_revisions

    widths = {"step0": 512, "step1000": 512, "step2000": 768}
    files = {"step0": ["config.json", "model.safetensors", "tokenizer.json"],
             "step1000": ["config.json", "tokenizer.json"], "step2000": ["config.json", "model.safetensors"]}
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(AutoConfig, "from_pretrained",
                        lambda name, revision=None: GPTNeoXConfig(hidden_size=widths[revision], num_attention_heads=8))
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda name, revision=None: files[revision])
    revs = [Revision("EleutherAI/pythia-70m", r, int(r[4:])) for r in widths]
    with pytest.raises(GptwavesError, match="pythia-70m@step1000 has no weights file"):
        check_revisions(revs)
    files["step1000"].append("model.safetensors")
    with pytest.raises(GptwavesError, match="step2000 has no tokenizer"):
        check_revisions(revs)
    files["step2000"].append("tokenizer.json")
    with pytest.raises(GptwavesError, match=r"pythia-70m@step2000 has width 768, the other revisions 512"):
        check_revisions(revs)
    widths["step2000"] = 512
    check_revisions(revs)
