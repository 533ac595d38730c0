"""Hugging Face causal LMs as instruments: a tiny randomly initialised GPT-2 built here
(no download) with a character-level tokenizer saved to disk, loaded by path."""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from gptwaves import api  # noqa: E402
from gptwaves.errors import GptwavesError  # noqa: E402
from gptwaves.hf import HFModel  # noqa: E402
from gptwaves.record import Recording  # noqa: E402

CHARS = sorted(set("\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("hf")
    tk = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(CHARS)}, merges=[]))
    tk.decoder = decoders.Fuse()
    PreTrainedTokenizerFast(tokenizer_object=tk).save_pretrained(d)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(CHARS), n_positions=24, n_embd=16, n_layer=2, n_head=2,
                     bos_token_id=None, eos_token_id=None)
    GPT2LMHeadModel(cfg).save_pretrained(d)
    return d


def test_recorded_hidden_states_equal_full_forward(hf_dir, tmp_path):
    run = tmp_path / "run"
    (path,) = api.record_run(run, "all", api.RecordSettings(samples=3, steps=40, prompt="\nThe ", batch_size=3,
                                                            sampling=api.SamplingConfig(seed=1)),
                             api.ModelSource(hf_model=str(hf_dir)), progress=False)
    m = HFModel(str(hf_dir))
    with Recording.open(path) as rec:
        assert rec.taps == ["hidden.0", "hidden.1", "hidden.2"]
        toks = torch.tensor(rec.tokens())
        P = rec.prompt_len
        assert P == 5 and rec.is_prompt.sum() == P - 1
        bs = m.config.block_size
        for j in range(rec.tokens().shape[1] - 1):
            lo = max(0, j - bs + 1)  # crop semantics beyond the 24-token context
            out = m.model(input_ids=toks[:, lo : j + 1], output_hidden_states=True)
            for i, tap in enumerate(rec.taps):
                np.testing.assert_allclose(rec.waves(tap)[:, j], out.hidden_states[i][:, -1].detach().numpy(),
                                           atol=1e-5)
        assert rec.text(0).startswith("\nThe ")


def test_waves_and_spelling_on_hf_model(hf_dir, tmp_path):
    run = tmp_path / "run"
    hf = api.ModelSource(hf_model=str(hf_dir))
    res = api.waves_run(run, record=api.RecordSettings(samples=8, steps=30), source=hf, progress=False,
                        figures=False)
    (ck,) = res["checkpoints"]
    assert set(ck["taps"]) == {"hidden.0", "hidden.1", "hidden.2"}
    assert 0 <= ck["taps"]["hidden.2"]["mean_abs_corr"] <= 1
    words = tmp_path / "words.txt"
    words.write_text("the\nand\na\nking\n")
    import importlib.util

    if importlib.util.find_spec("spellchecker") is None:  # the default English lexicon needs gptwaves[hf]
        with pytest.raises(GptwavesError, match="lexicon"):
            api.spelling_run(run, "all", api.SpellingSettings(samples=4), hf, progress=False)
    else:
        sp = api.spelling_run(run, "all", api.SpellingSettings(samples=4, length=20, n_boot=20, n_perm=10), hf,
                              progress=False, figures=False)
        assert sp["checkpoints"][0]["settings"]["lexicon"].startswith("pyspellchecker-")
    sp = api.spelling_run(run, "all", api.SpellingSettings(samples=12, length=30, lexicon=str(words)), hf,
                          progress=False, figures=False)
    st = sp["checkpoints"][0]["stats"]
    assert st["n_samples"] == 12
    assert len(st["counts"]["correct"]) == 12


def test_missing_hf_model_is_one_line_error(tmp_path):
    with pytest.raises(GptwavesError, match="cannot load Hugging Face model"):
        HFModel(str(tmp_path / "nope"))
