"""DDP training on 2 CPU processes (gloo) equals one process with the same global batch;
sharded recording equals an unsharded one."""

import os
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, **kw)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def _torchrun(*args):
    return _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                 "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "gptwaves", *args])


def test_ddp_matches_single_process_and_sharded_recording(tmp_path):
    corpus = tmp_path / "c.txt"
    words = ["the", "king", "and", "queen", "of", "love", "shall", "speak", "now", "my", "lord"]
    rng = np.random.default_rng(0)
    corpus.write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(800)) + "\n")
    common = ["train", "--preset", "smoke", "--corpus", str(corpus), "--max-iters", "12", "--n-embd", "16",
              "--batch-size", "8", "--block-size", "16", "--checkpoints", "0,12", "--quiet"]
    _run([sys.executable, "-m", "gptwaves", *common, "--out", str(tmp_path / "one")])
    _torchrun(*common, "--out", str(tmp_path / "two"))
    a = load_file(tmp_path / "one/checkpoints/iter_0000012.safetensors")
    b = load_file(tmp_path / "two/checkpoints/iter_0000012.safetensors")
    assert a.keys() == b.keys()
    # same global batch: equal up to the order of floating-point reductions
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    # only rank 0 wrote: one metrics file, no stray state files
    assert len(list((tmp_path / "two/state").glob("state_*.safetensors"))) == 1

    rec = ["record", "--checkpoint", "last", "--samples", "6", "--steps", "20", "--batch-size", "2", "--quiet"]
    _run([sys.executable, "-m", "gptwaves", *rec, "--run", str(tmp_path / "one")])
    # shard the recording of the same checkpoint across 2 ranks into another run dir copy
    import shutil

    shutil.copytree(tmp_path / "one/checkpoints", tmp_path / "shard/checkpoints")
    shutil.copy(tmp_path / "one/run.json", tmp_path / "shard/run.json")
    _torchrun(*rec, "--run-dir", str(tmp_path / "shard"))
    with h5py.File(tmp_path / "one/recordings/iter_0000012.h5") as f1, \
            h5py.File(tmp_path / "shard/recordings/iter_0000012.h5") as f2:
        assert np.array_equal(f1["tokens"][()], f2["tokens"][()])
        for tap in f1["waves"]:
            np.testing.assert_allclose(f1["waves"][tap][()], f2["waves"][tap][()], atol=1e-5)
