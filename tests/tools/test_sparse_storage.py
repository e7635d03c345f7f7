"""sparse_checkpoint.py: bit-exact round trips, small files at 90 % sparsity, loading, bad input."""
import argparse
import collections
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from td_fairseq import cli

from ..conftest import REPO, run_cli

_spec = importlib.util.spec_from_file_location("sparse_checkpoint",
                                              os.path.join(REPO, "scripts", "sparse_checkpoint.py"))
sparse_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sparse_script)

_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_same(a, b, where="checkpoint"):
    """Same structure, types and keys in order; tensors equal bit for bit."""
    assert type(a) is type(b), where
    if torch.is_tensor(a):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        bits = _BITS[a.element_size()]
        assert torch.equal(a.contiguous().view(bits), b.contiguous().view(bits)), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, argparse.Namespace):
        assert_same(vars(a), vars(b), where)
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.array_equal(a, b), where
    else:
        assert a == b, where


def load_any(path):
    from td_fairseq.files import allow_fairseq_checkpoints
    allow_fairseq_checkpoints()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pruned_90(trained_checkpoint, tmp_path_factory):
    """The tiny trained model, weight-pruned to 90 % by prune_checkpoint (a stock checkpoint)."""
    from td_fairseq.tools.checkpoint import prune_checkpoint
    out = tmp_path_factory.mktemp("pruned")
    prune_checkpoint(str(trained_checkpoint), [0.9], str(out))
    return out / "sparsity_0.90.pt"


def pack(src, dst):
    assert cli.run(sparse_script.main, ["pack", str(src), str(dst)]) == 0


def unpack(src, dst):
    assert cli.run(sparse_script.main, ["unpack", str(src), str(dst)]) == 0


@pytest.mark.parametrize("which", ["pruned stock", "raw training checkpoint"])
def test_round_trip_is_bit_exact(pruned_90, trained_checkpoint, tmp_path, which):
    src = pruned_90 if which == "pruned stock" else trained_checkpoint
    pack(src, tmp_path / "packed")
    unpack(tmp_path / "packed", tmp_path / "restored.pt")
    original, restored = load_any(src), load_any(tmp_path / "restored.pt")
    assert_same(original, restored)
    if which == "raw training checkpoint":  # legacy args and the model's OrderedDict with its versions
        assert isinstance(restored["cfg"]["model"], argparse.Namespace)
        assert restored["model"]._metadata == original["model"]._metadata
    else:  # tied embeddings stay one tensor
        model = restored["model"]
        assert model["decoder.output_projection.weight"].data_ptr() == model["encoder.embed_tokens.weight"].data_ptr()


def test_special_values_and_shared_sparse_tensors_survive():
    from td_fairseq.tools.sparse_storage import pack_state, unpack_state
    weight = torch.zeros(40, 30)
    weight[0, :4] = torch.tensor([-0.0, float("nan"), float("-inf"), 1e-45])  # -0.0 and a denormal are values
    weight[5, 7] = 3.0
    half = torch.zeros(64, 8, dtype=torch.float16)
    half[3, 3] = -2.5
    model = collections.OrderedDict(a=weight, tied=weight, half=half, step=torch.tensor(7),
                                    ints=torch.zeros(50, dtype=torch.int64))
    state = {"cfg": {"model": argparse.Namespace(arch="x", dims=[1, 2])}, "model": model,
             "extra_state": {"best": np.float64(1.25), "counts": np.arange(3, dtype=np.int32)}}
    packed = pack_state(state)
    assert set(packed["sparse"]) == {"a", "half", "ints"} and packed["aliases"] == {"tied": "a"}
    restored = unpack_state(packed)
    assert_same(state, restored)
    assert torch.signbit(restored["model"]["a"][0, 0]) and restored["model"]["tied"] is restored["model"]["a"]


def test_packed_file_loads_weights_only_without_allow_list(trained_checkpoint, tmp_path):
    """Even a checkpoint with legacy Namespace args packs into plain containers (fresh process)."""
    pack(trained_checkpoint, tmp_path / "packed")
    code = ("import sys, torch; s = torch.load(sys.argv[1], weights_only=True); "
            "print(s['format'], s['version'], len(s['model_keys']))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "packed")], capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["td_fairseq.sparse_checkpoint", "1"]


def made_up_checkpoint(layers=4, dim=256, ffn=1024, vocab=500, seed=0):
    """A state dict where attention and FFN dominate, as in a real model of that shape."""
    g = torch.Generator().manual_seed(seed)
    model = {"encoder.embed_tokens.weight": torch.randn(vocab, dim, generator=g)}
    for i in range(layers):
        p = f"encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            model[f"{p}.self_attn.{proj}.weight"] = torch.randn(dim, dim, generator=g)
            model[f"{p}.self_attn.{proj}.bias"] = torch.randn(dim, generator=g)
        model[f"{p}.fc1.weight"] = torch.randn(ffn, dim, generator=g)
        model[f"{p}.fc1.bias"] = torch.randn(ffn, generator=g)
        model[f"{p}.fc2.weight"] = torch.randn(dim, ffn, generator=g)
        model[f"{p}.fc2.bias"] = torch.randn(dim, generator=g)
    return {"cfg": {"model": {"arch": "transformer"}}, "model": model}


def sizes_at(state, sparsity, tmp_path):
    from td_fairseq.sparsity import PruneRanking
    from td_fairseq.files import save_torch
    from td_fairseq.tools.checkpoint import prunable_weights
    weights = prunable_weights(state["model"], "attn,ffn")
    pruned = dict(state, model={**state["model"], **PruneRanking(weights).prune(weights, sparsity)})
    save_torch(pruned, str(tmp_path / "dense.pt"))
    pack(tmp_path / "dense.pt", tmp_path / "packed")
    return os.path.getsize(tmp_path / "packed") / os.path.getsize(tmp_path / "dense.pt")


def test_size_at_90_percent(pruned_90, tmp_path):
    from td_fairseq.tools.checkpoint import prunable_weights
    from td_fairseq.tools.sparse_storage import encode_tensor
    assert sizes_at(made_up_checkpoint(), 0.9, tmp_path) <= 0.2
    assert sizes_at(made_up_checkpoint(), 0.0, tmp_path) > 0.99  # nothing to gain, nothing encoded
    # the tiny trained model: its dense embeddings and small tensors weigh more, so the whole file
    # is about 0.31 of dense (the detokenized test corpus has a larger vocabulary than the old
    # one, whose file was 0.27), while the pruned tensors alone shrink to 0.1 * 4 + 1/8 bytes per 4
    pack(pruned_90, tmp_path / "tiny.packed")
    assert os.path.getsize(tmp_path / "tiny.packed") / os.path.getsize(pruned_90) < 0.35
    weights = list(prunable_weights(load_any(pruned_90)["model"], "attn,ffn").values())
    assert len(weights) == 32
    entries = [encode_tensor(t) for t in weights]
    packed_bytes = sum(e["values"].numel() * 4 + e["mask"].numel() for e in entries)
    assert packed_bytes / sum(t.numel() * 4 for t in weights) == pytest.approx(0.1 * 4 / 4 + 1 / 32, abs=0.01)


def test_unpacked_checkpoint_loads_in_fairseq(pruned_90, data_bin, corpus_dir, tmp_path):
    from fairseq.models.transformer import TransformerModel
    pack(pruned_90, tmp_path / "packed")
    unpack(tmp_path / "packed", tmp_path / "restored.pt")
    lines = (corpus_dir / "test.en").read_text().splitlines()[:2]
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fairseq-interactive"), str(data_bin),
                             "--path", str(tmp_path / "restored.pt"), "--source-lang", "en", "--target-lang", "de",
                             "--beam", "2", "--cpu"], input="\n".join(lines) + "\n", capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    interactive = [l.split("\t")[2] for l in result.stdout.splitlines() if l.startswith("H-")]
    hubs = [TransformerModel.from_pretrained(str(d), checkpoint_file=f, data_name_or_path=str(data_bin))
            for d, f in ((tmp_path, "restored.pt"), (pruned_90.parent, pruned_90.name))]
    translations = [hub.translate(lines, beam=2) for hub in hubs]
    assert translations[0] == translations[1] == interactive


def test_script_runs_as_a_command(pruned_90, tmp_path):
    result = run_cli("scripts/sparse_checkpoint.py", "pack", pruned_90, tmp_path / "p")
    assert "tensors stored sparse" in result.stdout
    run_cli("scripts/sparse_checkpoint.py", "unpack", tmp_path / "p", tmp_path / "r.pt")
    assert (tmp_path / "r.pt").stat().st_size > 3 * (tmp_path / "p").stat().st_size


def bad_cases(ckpt, packed, tmp_path):
    truncated = tmp_path / "truncated.packed"
    truncated.write_bytes(packed.read_bytes()[:3000])
    truncated_ckpt = tmp_path / "truncated.pt"
    truncated_ckpt.write_bytes(ckpt.read_bytes()[:3000])
    future = tmp_path / "future.packed"
    torch.save(dict(torch.load(packed, weights_only=True), version=99), future)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    out = str(tmp_path / "out.pt")
    return {
        "pack missing": ["pack", str(tmp_path / "nope.pt"), out],
        "pack truncated": ["pack", str(truncated_ckpt), out],
        "pack packed": ["pack", str(packed), out],
        "pack foreign": ["pack", str(foreign), out],
        "pack onto input": ["pack", str(ckpt), str(ckpt)],
        "pack into missing dir": ["pack", str(ckpt), str(tmp_path / "no" / "out")],
        "unpack missing": ["unpack", str(tmp_path / "nope.packed"), out],
        "unpack truncated": ["unpack", str(truncated), out],
        "unpack not packed": ["unpack", str(ckpt), out],
        "unpack future version": ["unpack", str(future), out],
        "unpack onto input": ["unpack", str(packed), str(packed)],
        "unknown command": ["squash", str(ckpt), out],
    }


@pytest.mark.parametrize("case", ["pack missing", "pack truncated", "pack packed", "pack foreign", "pack onto input",
                                  "pack into missing dir", "unpack missing", "unpack truncated", "unpack not packed",
                                  "unpack future version", "unpack onto input", "unknown command"])
def test_bad_input(pruned_90, tmp_path, capsys, case):
    ckpt, packed = tmp_path / "model.pt", tmp_path / "model.packed"
    ckpt.write_bytes(pruned_90.read_bytes())
    pack(ckpt, packed)
    capsys.readouterr()
    argv = bad_cases(ckpt, packed, tmp_path)[case]
    listing = {p: p.read_bytes() for p in tmp_path.iterdir()}
    assert cli.run(sparse_script.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == listing  # nothing written, nothing changed
