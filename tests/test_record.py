"""Recording waves to HDF5 (gptwaves.record): layout, metadata, the lazy reader, determinism,
resumption after an interruption, integrity checks, bounded memory, and CLI bad input."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import gptwaves
from gptwaves.cli import main
from gptwaves.errors import GptwavesError
from gptwaves.model import GPT, GPTConfig
from gptwaves.record import Recording, RecordSpec, list_recordings, open_recording, record, recording_matches
from gptwaves.runtime import Interrupted
from gptwaves.sample import SamplingConfig, batch_generator, generate

VOCAB = list("\n !',.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
BS = 16
C = 16


pytestmark = pytest.mark.usefixtures("one_thread_module")


def make_model(seed: int = 0) -> tuple[GPT, dict]:
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=BS, vocab_size=len(VOCAB), n_layer=2, n_head=2, n_embd=C, dropout=0.0)
    model = GPT(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    meta = {"iteration": 7, "weights_sha256": f"sha-of-model-{seed}", "config": cfg.to_dict(),
            "source": "test"}
    return model.eval(), meta


@pytest.fixture(scope="module")
def mm():
    return make_model()


def spec(**kw) -> RecordSpec:
    base = dict(samples=10, steps=BS + 6, prompt="Th", taps=("hook_embed", "blocks.1.hook_resid_post",
                                                             "ln_final.hook_normalized"),
                sampling=SamplingConfig(seed=3), batch_size=4)
    base.update(kw)
    return RecordSpec(**base)


def do_record(mm, path, sp=None, **kw):
    model, meta = mm
    return record(model, meta, VOCAB, sp or spec(), path, progress=False, **kw)


def h5_content(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
        out["__attrs__"] = {k: (v if not isinstance(v, np.ndarray) else v.tolist()) for k, v in f.attrs.items()
                            if k != "created"}
    return out


def assert_same_recording(a: Path, b: Path):
    ca, cb = h5_content(a), h5_content(b)
    assert set(ca) == set(cb)
    for k in ca:
        if k == "__attrs__":
            assert ca[k] == cb[k]
        else:
            assert ca[k].dtype == cb[k].dtype, k
            assert np.array_equal(ca[k], cb[k]), k


class StopAfter:
    """A stop flag that turns truthy after ``k`` checks (record checks it before each new batch)."""

    def __init__(self, k: int):
        self.k = k
        self.checks = 0

    def __bool__(self) -> bool:
        self.checks += 1
        return self.checks > self.k


# --------------------------------------------------------------------------- layout

def test_layout_and_metadata(mm, tmp_path):
    _, meta = mm
    sp = spec()
    path = do_record(mm, tmp_path / "recordings" / "iter_0000007.h5", sp)
    assert path.exists() and path.with_suffix(".json").exists()
    P, T, S = 2, sp.steps, sp.samples
    n = P - 1 + T
    with h5py.File(path, "r") as f:
        assert set(f["waves"]) == set(sp.taps)
        for t in sp.taps:
            ds = f["waves"][t]
            assert ds.shape == (S, n, C) and ds.dtype == np.float32
            assert ds.chunks == (1, n, C)  # one sample per chunk: reading one sample is cheap
        assert f["tokens"].shape == (S, P + T)
        assert f["entropy"].shape == (S, n) and f["entropy"].dtype == np.float32
        isp = f["is_prompt"][()]
        assert isp.dtype == bool and isp.shape == (n,)
        assert isp[: P - 1].all() and not isp[P - 1 :].any()
        assert np.all(f["entropy"][()] >= 0) and np.all(f["entropy"][()] <= np.log(len(VOCAB)) + 1e-5)
    with Recording.open(path) as rec:
        m = rec.meta
        assert m["model_config"] == meta["config"]
        assert m["iteration"] == 7 and rec.iteration == 7
        assert m["weights_sha256"] == meta["weights_sha256"]
        assert m["sampling"] == sp.sampling.to_dict()
        assert m["seed"] == 3 and m["context_policy"] == "crop"
        assert m["prompt"] == "Th" and m["prompt_len"] == 2
        assert m["samples"] == S and m["steps"] == T and m["batch_size"] == 4
        assert m["dtype"] == "float32" and m["taps"] == list(sp.taps) and m["vocab"] == VOCAB
        pk = m["packages"]
        assert pk["gptwaves"] == gptwaves.__version__ and pk["torch"] == torch.__version__
        assert pk["numpy"] == np.__version__ and pk["h5py"] == h5py.__version__ and "python" in pk
    # finished: no partial parts left behind
    assert not list(path.parent.glob(".*parts*"))
    assert list_recordings(tmp_path) == [path]
    assert recording_matches(path, sp, meta["weights_sha256"])
    assert not recording_matches(path, sp, "other weights")
    assert not recording_matches(path, spec(samples=11), meta["weights_sha256"])


def test_content_equals_batched_generation(mm, tmp_path):
    """Sample s of batch b is row s of generate(..., batch_generator(seed, b))."""
    model, _ = mm
    sp = spec()
    path = do_record(mm, tmp_path / "r.h5", sp)
    ids = [VOCAB.index(c) for c in sp.prompt]
    with Recording.open(path) as rec:
        for b, (lo, size) in enumerate([(0, 4), (4, 4), (8, 2)]):
            res = generate(model, ids, sp.steps, size, sp.sampling, taps=list(sp.taps),
                           generator=batch_generator(sp.sampling.seed, b))
            np.testing.assert_array_equal(rec.tokens(slice(lo, lo + size)), res.tokens)
            np.testing.assert_array_equal(rec.entropy(slice(lo, lo + size)), res.entropy)
            for t in sp.taps:
                np.testing.assert_array_equal(rec.waves(t, samples=slice(lo, lo + size)), res.taps[t])


@torch.no_grad()
def test_recorded_waves_exact_against_full_forward(mm, tmp_path):
    """The file holds what a full, uncached forward over the cropped context gives (docs/method.md, Recording waves)."""
    model, _ = mm
    sp = spec(samples=3, steps=2 * BS + 3, taps=tuple(model.tap_names))
    path = do_record(mm, tmp_path / "r.h5", sp)
    with Recording.open(path) as rec:
        seq = torch.as_tensor(rec.tokens(), dtype=torch.long)
        ent = rec.entropy()
        waves = {t: rec.waves(t) for t in rec.taps}
    for j in range(seq.shape[1] - 1):
        lo = max(0, j - BS + 1)
        logits, _, tv = model(seq[:, lo : j + 1], taps=model.tap_names)
        for t in model.tap_names:
            assert np.abs(waves[t][:, j] - tv[t][:, -1].numpy()).max() <= 1e-5, (t, j)
        p = torch.softmax(logits[:, -1].double(), -1)
        np.testing.assert_allclose(ent[:, j], (-(p * p.log()).sum(-1)).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- reader

def test_reader_texts_chars_and_lazy_slices(mm, tmp_path):
    sp = spec()
    path = do_record(mm, tmp_path / "r.h5", sp)
    with open_recording(path) as rec:
        assert rec.n_samples == 10 and rec.prompt_len == 2 and rec.taps == list(sp.taps)
        toks = rec.tokens()
        texts = rec.texts()
        assert texts == ["".join(VOCAB[i] for i in row) for row in toks]
        assert all(t.startswith("Th") and len(t) == 2 + sp.steps for t in texts)
        assert rec.text(3) == texts[3]
        ic, nc = rec.input_chars(), rec.next_chars()
        assert ic.shape == nc.shape == (10, 1 + sp.steps)
        for i in range(10):
            assert "".join(ic[i]) == texts[i][:-1] and "".join(nc[i]) == texts[i][1:]
        np.testing.assert_array_equal(rec.input_chars(samples=4), ic[4])
        full = rec.waves("hook_embed")
        one = rec.waves("hook_embed", samples=4)
        assert one.shape == (1 + sp.steps, C)
        np.testing.assert_array_equal(one, full[4])
        np.testing.assert_array_equal(rec.waves("hook_embed", samples=2, steps=slice(3, 7), channels=[0, 5]),
                                      full[2, 3:7][:, [0, 5]])
        assert isinstance(rec.wave_dataset("hook_embed"), h5py.Dataset)  # lazy handle, not an array
        batches = list(rec.iter_batches("hook_embed", batch=3))
        assert [b.shape[0] for b in batches] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate(batches), full)
        with pytest.raises(GptwavesError, match="not in recording"):
            rec.waves("blocks.0.hook_resid_post")


def test_open_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(GptwavesError):
        Recording.open(tmp_path / "none.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(GptwavesError, match="not a gptwaves recording"):
        Recording.open(other)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(GptwavesError):
        Recording.open(junk)


# --------------------------------------------------------------------------- determinism

def test_same_seed_bit_identical_other_seed_differs(mm, tmp_path):
    a = do_record(mm, tmp_path / "a" / "r.h5")
    b = do_record(mm, tmp_path / "b" / "r.h5")
    assert_same_recording(a, b)
    c = do_record(mm, tmp_path / "c" / "r.h5", spec(sampling=SamplingConfig(seed=4)))
    with h5py.File(a, "r") as fa, h5py.File(c, "r") as fc:
        assert not np.array_equal(fa["tokens"][()], fc["tokens"][()])
        assert not np.array_equal(fa["waves/ln_final.hook_normalized"][()], fc["waves/ln_final.hook_normalized"][()])


def test_float16_close_to_float32(mm, tmp_path):
    a = do_record(mm, tmp_path / "a.h5")
    b = do_record(mm, tmp_path / "b.h5", spec(dtype="float16"))
    with Recording.open(a) as ra, Recording.open(b) as rb:
        np.testing.assert_array_equal(ra.tokens(), rb.tokens())
        np.testing.assert_array_equal(ra.entropy(), rb.entropy())
        assert rb.meta["dtype"] == "float16"
        for t in ra.taps:
            x16 = rb.waves(t)
            assert x16.dtype == np.float16 and rb.wave_dataset(t).dtype == np.float16
            x32 = ra.waves(t)
            np.testing.assert_allclose(x16.astype(np.float32), x32, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- prompts

def test_long_prompt_and_multichar_prompt_flags(mm, tmp_path):
    prompt = "The king said this: no more, and then"  # longer than block_size
    assert len(prompt) > BS
    sp = spec(prompt=prompt, steps=5, samples=3)
    path = do_record(mm, tmp_path / "r.h5", sp)
    with Recording.open(path) as rec:
        P = len(prompt)
        isp = rec.is_prompt
        assert isp.shape == (P - 1 + 5,) and isp[: P - 1].all() and not isp[P - 1 :].any()
        assert all(t.startswith(prompt) and len(t) == P + 5 for t in rec.texts())
        # the prompt's positions are recorded: the input characters are the prompt
        assert "".join(rec.input_chars(samples=0)[: P - 1]) == prompt[:-1]
        assert "".join(rec.next_chars(samples=0)[: P - 1]) == prompt[1:]


def test_prompt_outside_vocabulary(mm, tmp_path):
    with pytest.raises(GptwavesError, match="'€'"):
        do_record(mm, tmp_path / "r.h5", spec(prompt="a€b"))
    assert not (tmp_path / "r.h5").exists()


def test_spec_validation():
    for kw in ({"samples": 0}, {"steps": 0}, {"batch_size": 0}, {"dtype": "float64"}, {"prompt": ""}):
        with pytest.raises(GptwavesError):
            spec(**kw)


def test_unknown_tap(mm, tmp_path):
    with pytest.raises(GptwavesError, match="unknown tap"):
        do_record(mm, tmp_path / "r.h5", spec(taps=("blocks.7.hook_resid_post",)))


# --------------------------------------------------------------------------- resumption

def test_interrupted_recording_resumes_identically(mm, tmp_path):
    sp = spec(samples=18)  # 5 batches of at most 4
    ref = do_record(mm, tmp_path / "ref" / "r.h5", sp)
    out = tmp_path / "run" / "r.h5"
    stop = StopAfter(2)
    with pytest.raises(Interrupted):
        do_record(mm, out, sp, stop=stop)
    assert not out.exists() and not out.with_suffix(".json").exists()  # no half-written recording
    parts = list(out.parent.glob(".r.parts-*"))
    assert len(parts) == 1
    assert sorted(p.name for p in parts[0].iterdir()) == ["batch_00000.npz", "batch_00001.npz"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in parts[0].iterdir()}
    # a second interruption keeps the finished parts untouched and adds one more
    with pytest.raises(Interrupted):
        do_record(mm, out, sp, stop=StopAfter(1))
    assert {p.name: p.stat().st_mtime_ns for p in parts[0].iterdir() if p.name in mtimes} == mtimes
    assert len(list(parts[0].iterdir())) == 3
    do_record(mm, out, sp)
    assert_same_recording(out, ref)
    assert not parts[0].exists()
    with Recording.open(out):
        pass


def test_interrupt_before_any_batch(mm, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(Interrupted):
        do_record(mm, out, stop=StopAfter(0))
    assert not out.exists()


def test_changed_settings_discard_old_parts(mm, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(Interrupted):
        do_record(mm, out, stop=StopAfter(2))
    old = list(tmp_path.glob(".r.parts-*"))
    assert len(old) == 1
    new_spec = spec(sampling=SamplingConfig(seed=99))
    with pytest.raises(Interrupted):
        do_record(mm, out, new_spec, stop=StopAfter(1))
    now = list(tmp_path.glob(".r.parts-*"))
    assert len(now) == 1 and now[0] != old[0] and not old[0].exists()
    assert [p.name for p in now[0].iterdir()] == ["batch_00000.npz"]
    do_record(mm, out, new_spec)
    ref = do_record(mm, tmp_path / "ref" / "r.h5", new_spec)
    assert_same_recording(out, ref)


def test_damaged_part_is_reported_and_redone(mm, tmp_path):
    out = tmp_path / "r.h5"
    with pytest.raises(Interrupted):
        do_record(mm, out, stop=StopAfter(2))
    part = next(tmp_path.glob(".r.parts-*")) / "batch_00001.npz"
    part.write_bytes(part.read_bytes()[:50])
    with pytest.raises(GptwavesError, match="damaged"):
        do_record(mm, out)
    assert not out.exists()
    do_record(mm, out)
    assert_same_recording(out, do_record(mm, tmp_path / "ref" / "r.h5"))


# --------------------------------------------------------------------------- integrity

def test_truncated_or_bitflipped_file_refused(mm, tmp_path):
    path = do_record(mm, tmp_path / "r.h5")
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(GptwavesError, match="sha256"):
        Recording.open(path)
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    path.write_bytes(bytes(flipped))
    with pytest.raises(GptwavesError, match="sha256"):
        Recording.open(path)
    path.write_bytes(good)
    with Recording.open(path) as rec:
        assert rec.n_samples == 10


# --------------------------------------------------------------------------- memory

def test_parts_are_per_batch(mm, tmp_path, monkeypatch):
    """Each generated batch holds at most batch_size samples and is saved before the next starts."""
    import gptwaves.record as recmod

    sizes = []
    real = recmod.generate

    def spy(model, prompt_ids, steps, batch_size, *a, **kw):
        sizes.append(batch_size)
        return real(model, prompt_ids, steps, batch_size, *a, **kw)

    monkeypatch.setattr(recmod, "generate", spy)
    out = tmp_path / "r.h5"
    with pytest.raises(Interrupted):
        do_record(mm, out, spec(samples=23, batch_size=5), stop=StopAfter(3))
    parts = sorted(next(tmp_path.glob(".r.parts-*")).iterdir())
    assert len(parts) == 3
    for p in parts:
        with np.load(p) as z:
            assert z["tokens"].shape[0] == 5 and z["tap0"].shape[0] == 5
    do_record(mm, out, spec(samples=23, batch_size=5))
    assert sizes == [5, 5, 5, 5, 3]  # only the missing batches were generated


def test_peak_memory_does_not_grow_with_samples(mm, tmp_path):
    """tracemalloc sees numpy buffers: 4x more samples must not mean holding them all at once.

    Both recordings are larger than the fixed 1 MiB read buffer of the checksum, so the only
    S-dependent memory would be the recording itself."""
    taps = tuple(mm[0].tap_names)

    def peak(samples):
        sp = spec(samples=samples, steps=40, taps=taps, batch_size=32)
        tracemalloc.start()
        try:
            do_record(mm, tmp_path / f"s{samples}" / "r.h5", sp)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(32)  # warm-up: one-time imports and caches are not the recorder's memory
    small, big = peak(128), peak(512)
    full_size = 512 * 41 * C * 4 * len(taps)  # all waves of the big recording, float32 (~5.4 MB)
    # holding all samples would add ~0.75 * full_size; batch-wise recording adds ~nothing
    assert big - small < full_size / 4, (small, big, full_size)


# --------------------------------------------------------------------------- CLI bad input

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, trained_run):
    """A private copy of the session's tiny trained run (which is read-only)."""
    src = trained_run[0]
    dst = tmp_path_factory.mktemp("cli") / "run"
    shutil.copytree(src, dst)
    return dst


def run_cli(capsys, argv):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gptwaves: error: ")
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_cli_prompt_outside_vocabulary(capsys, cli_run):
    code, _, err = run_cli(capsys, ["record", "--run", str(cli_run), "--checkpoint", "last", "--samples", "2",
                                    "--steps", "3", "--prompt", "Zq€\u00e9", "--quiet"])
    assert_one_line_error(code, err, "vocabulary", "'€'", "'é'")
    assert not list(cli_run.glob("recordings/*.h5"))


@pytest.mark.parametrize("args,needles", [
    (["--steps", "0"], ["steps"]),
    (["--taps", "hook_embed,blocks.9.hook_resid_post"], ["unknown tap", "blocks.9.hook_resid_post"]),
    (["--checkpoint", "12345"], ["12345"]),
    (["--checkpoint", "/nonexistent/dir/ckpt.pt"], ["not found", "/nonexistent/dir/ckpt.pt"]),
    (["--samples", "0"], ["samples"]),
    (["--context", "window"], ["context"]),
])
def test_cli_record_bad_input(capsys, cli_run, args, needles):
    argv = ["record", "--run", str(cli_run), "--checkpoint", "last", "--samples", "2", "--steps", "3",
            "--quiet", *args]
    code, _, err = run_cli(capsys, argv)
    assert_one_line_error(code, err, *needles)


def test_cli_spelling_one_sample(capsys, cli_run):
    code, _, err = run_cli(capsys, ["spelling", "--run", str(cli_run), "--checkpoint", "last", "--samples", "1",
                                    "--quiet"])
    assert_one_line_error(code, err, "--samples must be in [2")


def test_cli_spelling_bad_lexicons(capsys, cli_run, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n# only a comment\n")
    binary = tmp_path / "words.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    base = ["spelling", "--run", str(cli_run), "--checkpoint", "last", "--samples", "3", "--length", "8",
            "--quiet", "--lexicon"]
    for path, needles in ((empty, ("empty", "no words")), (blank, ("empty", "no words")),
                          (binary, ("binary", "not a text", "UTF-8")), (tmp_path / "missing.txt", ("not found",))):
        code, _, err = run_cli(capsys, base + [str(path)])
        assert_one_line_error(code, err, "lexicon", str(path))
        assert any(n in err for n in needles), err
    assert not list(cli_run.glob("spelling/*.json"))


def test_cli_subprocess_one_line_error(cli_run):
    """The real console entry point: one line on stderr, non-zero exit, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "gptwaves", "record", "--run", str(cli_run), "--checkpoint",
                           "last", "--steps", "0", "--quiet"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptwaves: error: "), proc.stderr
