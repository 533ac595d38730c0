"""One device/distributed setup for train, record and spelling (distributed.setup), checked without a GPU."""

import pytest
import torch

from gptwaves import distributed as dd


class StopSetup(Exception):
    pass


@pytest.fixture
def setup_spy(monkeypatch):
    """Replace distributed.setup: record the device it is called with, then stop the stage."""
    seen = []

    def fake_setup(device):
        seen.append(device)
        raise StopSetup

    monkeypatch.setattr(dd, "setup", fake_setup)
    return seen


@pytest.fixture
def fake_torchrun(monkeypatch):
    """Rank 1 of 2 on a machine that pretends to have 2 GPUs; the process group is not started."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(dd, "init", lambda device_type: calls.append(device_type) or dd.info())
    return calls


def test_torchrun_gpu_rank_gets_its_own_cuda_device_and_nccl(fake_torchrun):
    dev, d = dd.setup("auto")
    assert dev == torch.device("cuda", 1)  # not cuda:0 for every rank
    assert d.rank == 1 and d.world == 2 and fake_torchrun == ["cuda"]
    dev, _ = dd.setup("cuda")
    assert dev == torch.device("cuda", 1)


def test_torchrun_cpu_uses_gloo(fake_torchrun):
    dev, _ = dd.setup("cpu")
    assert dev == torch.device("cpu") and fake_torchrun == ["cpu"]


def test_single_process_is_untouched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dev, d = dd.setup("cpu")
    assert dev == torch.device("cpu") and not d.enabled


@pytest.mark.parametrize("stage", ["recordings", "spelling"])
def test_stages_use_the_shared_setup(stage, monkeypatch, tmp_path, setup_spy):
    """record_run and spelling_run ask distributed.setup for their device (no private device logic)."""
    import importlib

    mod = importlib.import_module(f"gptwaves.stages.{stage}")
    monkeypatch.setattr(mod, "select_checkpoints", lambda *a, **k: [])
    if stage == "spelling":
        monkeypatch.setattr(mod, "resolve_lexicon", lambda *a, **k: (frozenset({"a"}), "x", "h"))
    from gptwaves.stages.common import ModelSource

    fn = mod.record_run if stage == "recordings" else mod.spelling_run
    with pytest.raises(StopSetup):
        fn(tmp_path / "run", "all", source=ModelSource(device="cuda"))
    assert setup_spy == ["cuda"]


def test_train_uses_the_shared_setup(monkeypatch, tmp_path, corpus_path, setup_spy):
    from gptwaves import train as tr
    from gptwaves.config import preset
    from gptwaves.corpus import Corpus

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    corpus = Corpus.load(corpus_path)
    with pytest.raises(StopSetup):
        tr.train(preset("smoke").override(device="cpu"), corpus, tmp_path / "run")
    assert setup_spy == ["cpu"] and not (tmp_path / "run" / "run.json").exists()
