"""compact_checkpoint.py: compact models translate as the masked ones, shrink as planned, and load in fairseq."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

import td_fairseq
from td_fairseq import cli

from ..conftest import REPO, run_cli

_spec = importlib.util.spec_from_file_location("compact_checkpoint",
                                              os.path.join(REPO, "scripts", "compact_checkpoint.py"))
compact_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compact_script)

DECODE = dict(beam=5, lenpen=1.0, max_len_a=1.2, max_len_b=10)


@pytest.fixture(scope="module")
def compacted(trained_checkpoint, tmp_path_factory):
    """{ffn,heads}.pt and their masked references, compacted at 0.5 through the script."""
    out = tmp_path_factory.mktemp("compact")
    for name, extra in (("ffn", []), ("heads", ["--heads"])):
        argv = [str(trained_checkpoint), "--unit-sparsity", "0.5", *extra, "--out", str(out / f"{name}.pt"),
                "--masked-out", str(out / f"{name}_masked.pt")]
        assert cli.run(compact_script.main, argv) == 0
    return out


def load(path, data_bin):
    """(model, task) through fairseq's own loader, with the plugin registered."""
    from fairseq import checkpoint_utils

    import td_fairseq.models  # noqa: F401
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], {"data": str(data_bin)})
    return models[0].eval(), task


def decode(path, data_bin):
    """(hypotheses of the test set, teacher-forced log-probs of its first batch, model)."""
    from td_fairseq.tools.translate import DecodeConfig, translate
    model, task = load(path, data_bin)
    task.load_dataset("test")
    hyps, _, _ = translate(model, task, DecodeConfig("test", **DECODE), 4000)
    sample = next(iter(task.get_batch_iterator(dataset=task.dataset("test"), max_tokens=4000, seed=1,
                                               num_workers=0).next_epoch_itr(shuffle=False)))
    with torch.no_grad():
        logits = model(**sample["net_input"])[0]
    return hyps, torch.log_softmax(logits.float(), -1), model


def parameters(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, arch", [("ffn", "transformer_tiny"), ("heads", "transformer_compact")])
def test_compact_translates_as_masked(compacted, data_bin, name, arch):
    hyps, logprobs, model = decode(compacted / f"{name}.pt", data_bin)
    masked_hyps, masked_logprobs, masked = decode(compacted / f"{name}_masked.pt", data_bin)
    assert torch.load(compacted / f"{name}.pt", weights_only=True)["cfg"]["model"]["arch"] == arch
    assert hyps == masked_hyps and len(hyps) == 40
    # hypotheses of a barely trained model repeat; the log-probs of every position pin the function down
    assert torch.allclose(logprobs, masked_logprobs, atol=1e-5, rtol=0)
    assert parameters(model) < parameters(masked)


def test_parameter_count_and_kept_units(compacted, trained_checkpoint, data_bin):
    from td_fairseq.sparsity import PruneRanking
    from td_fairseq.tools.loading import load_checkpoint
    dense = load_checkpoint(str(trained_checkpoint))["model"]
    models = {n: load(compacted / f"{n}.pt", data_bin)[0] for n in ("ffn", "heads")}
    full = parameters(load(compacted / "ffn_masked.pt", data_bin)[0])
    # 4 layers lose 128 of 256 FFN units; a unit is an fc1 row (64), its bias (1) and an fc2 column (64)
    assert full - parameters(models["ffn"]) == 4 * 128 * (64 + 1 + 64)
    # 6 attention modules lose 1 of 2 heads of size 32: q/k/v rows with biases, and out_proj columns
    assert parameters(models["ffn"]) - parameters(models["heads"]) == 6 * (3 * (32 * 64 + 32) + 64 * 32)
    layer = models["heads"].decoder.layers[1]
    assert layer.fc1.out_features == 128 and layer.self_attn.num_heads == 1 and layer.encoder_attn.num_heads == 1
    assert layer.self_attn.head_dim == 32
    # the kept units are those PruneRanking's unit mode keeps, in their original order
    key = "decoder.layers.1.fc1.weight"
    pruned = PruneRanking({key: dense[key]}, "unit").masks(0.5)[key][:, 0]
    assert torch.equal(models["ffn"].state_dict()[key], dense[key][~pruned])


def test_per_layer_widths_load_through_the_plugin(trained_checkpoint, data_bin, tmp_path):
    """Widths that differ between layers (not reachable from the script) still load and match the mask."""
    from td_fairseq.files import save_torch
    from td_fairseq.tools.checkpoint import stock_checkpoint
    from td_fairseq.tools.loading import load_checkpoint
    from td_fairseq.tools.compact import compact_state, masked_state, plan_compaction
    state = stock_checkpoint(load_checkpoint(str(trained_checkpoint)))
    plan = plan_compaction(state, 0.25, heads=True)
    plan["ffn"]["encoder.layers.0"] = plan["ffn"]["encoder.layers.0"][:100]
    plan["ffn"]["decoder.layers.1"] = plan["ffn"]["decoder.layers.1"][20:50]
    plan["heads"]["decoder.layers.0.encoder_attn"] = torch.tensor([1])
    compact = compact_state(state, plan)
    model_cfg = compact["cfg"]["model"]
    assert model_cfg["arch"] == "transformer_compact"
    assert model_cfg["compact_encoder_ffn"] == "100,192" and model_cfg["compact_decoder_ffn"] == "192,30"
    assert model_cfg["compact_decoder_cross_heads"] == "1,2" and model_cfg["compact_encoder_heads"] == "2,2"
    save_torch(compact, str(tmp_path / "compact.pt"))
    save_torch(masked_state(state, plan), str(tmp_path / "masked.pt"))
    hyps, logprobs, _ = decode(tmp_path / "compact.pt", data_bin)
    masked_hyps, masked_logprobs, _ = decode(tmp_path / "masked.pt", data_bin)
    assert hyps == masked_hyps
    assert torch.allclose(logprobs, masked_logprobs, atol=1e-5, rtol=0)
    # the check can fail: keep other units than the masked model does and the outputs move
    wrong = dict(plan, ffn=dict(plan["ffn"], **{"decoder.layers.1": plan["ffn"]["decoder.layers.1"] + 1}))
    save_torch(compact_state(state, wrong), str(tmp_path / "wrong.pt"))
    _, wrong_logprobs, _ = decode(tmp_path / "wrong.pt", data_bin)
    assert (wrong_logprobs - masked_logprobs).abs().max() > 1e-3


def interactive(path, data_bin, corpus_dir, cwd, *extra):
    """fairseq-interactive on the first two test sentences (tokenized text on stdin): its hypotheses."""
    lines = (corpus_dir / "test.en").read_text().splitlines()[:2]
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "fairseq-interactive"),
                             str(data_bin), "--path", str(path), "--source-lang", "en", "--target-lang", "de",
                             "--beam", "5", "--max-len-a", "1.2", "--max-len-b", "10", "--cpu", *extra],
                            input="\n".join(lines) + "\n", capture_output=True, text=True, cwd=cwd, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return [l.split("\t")[2] for l in result.stdout.splitlines() if l.startswith("H-")]


def test_fairseq_interactive_and_hub_load_compact_checkpoints(compacted, data_bin, corpus_dir, tmp_path):
    from fairseq.models.transformer import TransformerModel

    from td_fairseq.tools.translate import DecodeConfig, translate
    expected = {}
    for name in ("ffn", "heads"):
        model, task = load(compacted / f"{name}.pt", data_bin)
        task.load_dataset("test")
        expected[name] = translate(model, task, DecodeConfig("test", **DECODE), 4000)[0][:2]
    # stock checkpoint: plain fairseq, outside the repo, no --user-dir; heads need the plugin
    assert interactive(compacted / "ffn.pt", data_bin, corpus_dir, tmp_path) == expected["ffn"]
    plugin = os.path.dirname(td_fairseq.__file__)
    with_plugin = interactive(compacted / "heads.pt", data_bin, corpus_dir, tmp_path, "--user-dir", plugin)
    assert with_plugin == expected["heads"]
    source = (corpus_dir / "test.en").read_text().splitlines()[0]
    for name in ("ffn", "heads"):
        hub = TransformerModel.from_pretrained(str(compacted), checkpoint_file=f"{name}.pt",
                                               data_name_or_path=str(data_bin), user_dir=plugin)
        assert hub.translate(source, beam=5, max_len_a=1.2, max_len_b=10) == expected[name][0]


def bad_cases(ckpt, compact, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(ckpt, "rb").read()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    out = str(tmp_path / "out.pt")
    return {
        "missing": [str(tmp_path / "nope.pt"), "--unit-sparsity", "0.5", "--out", out],
        "truncated": [str(truncated), "--unit-sparsity", "0.5", "--out", out],
        "foreign": [str(foreign), "--unit-sparsity", "0.5", "--out", out],
        "sparsity one": [str(ckpt), "--unit-sparsity", "1.0", "--out", out],
        "sparsity negative": [str(ckpt), "--unit-sparsity", "-0.5", "--out", out],
        "output is input": [str(ckpt), "--unit-sparsity", "0.5", "--out", str(ckpt)],
        "output dir missing": [str(ckpt), "--unit-sparsity", "0.5", "--out", str(tmp_path / "no" / "out.pt")],
        "already compact": [str(compact), "--unit-sparsity", "0.5", "--out", out],
        "no out": [str(ckpt), "--unit-sparsity", "0.5"],
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "sparsity one", "sparsity negative",
                                  "output is input", "output dir missing", "already compact", "no out"])
def test_bad_input(trained_checkpoint, compacted, tmp_path, capsys, case):
    ckpt = tmp_path / "model.pt"
    shutil.copy(trained_checkpoint, ckpt)
    argv = bad_cases(ckpt, compacted / "heads.pt", tmp_path)[case]
    listing = sorted(os.listdir(tmp_path))
    before = ckpt.read_bytes()
    assert cli.run(compact_script.main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0]
    assert sorted(os.listdir(tmp_path)) == listing and ckpt.read_bytes() == before


def test_script_runs_as_a_command(trained_checkpoint, tmp_path):
    result = run_cli("scripts/compact_checkpoint.py", trained_checkpoint, "--unit-sparsity", "0.75", "--out",
                     tmp_path / "c.pt")
    assert "arch transformer_tiny" in result.stdout and "encoder_ffn: 64,64" in result.stdout
    state = torch.load(tmp_path / "c.pt", weights_only=True)  # plain containers only
    assert state["compact"]["unit_sparsity"] == 0.75 and "compact_checkpoint.py" in state["compact"]["command"]
