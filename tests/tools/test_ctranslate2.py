"""CTranslate2: export any checkpoint of ours, translate as fairseq does, and the stock commands."""
import importlib.util
import json
import os
import subprocess

import pytest
import sacrebleu

from td_fairseq import cli
from td_fairseq.tools.ctranslate2_translate import load_translator, source_batches, translate_ct2
from td_fairseq.tools.loading import load_translation_model
from td_fairseq.tools.translate import DecodeConfig, load_subset, translate

from ..conftest import REPO, TRAIN_ARGS, run_cli
from .test_checkpoint import prune_script
from .test_compact import compact_script

_spec = importlib.util.spec_from_file_location("export_ctranslate2",
                                               os.path.join(REPO, "scripts", "export_ctranslate2.py"))
export_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(export_script)

DECODE = DecodeConfig(beam=4)


@pytest.fixture(scope="module")
def served_checkpoint(data_bin, tmp_path_factory):
    """A tiny TD model trained long enough (200 updates) to translate, not just repeat one word."""
    save_dir = tmp_path_factory.mktemp("served")
    run_cli("fairseq-train", data_bin, *TRAIN_ARGS, "--max-update", "200", "--save-dir", save_dir)
    return save_dir / "checkpoint_last.pt"


def export(ckpt, data_bin, out, *extra):
    return cli.run(export_script.main, [str(ckpt), "--data-bin", str(data_bin), "--out", str(out), *extra])


def both_engines(ckpt, model_dir, data_bin, decode=DECODE):
    """(fairseq hypotheses, CTranslate2 hypotheses, references, each sentence's length bound)."""
    model, task, _ = load_translation_model(str(ckpt), str(data_bin))
    load_subset(task, str(data_bin), decode.subset)
    fairseq_hyps, refs, _ = translate(model, task, decode, 4000)
    translator = load_translator(str(model_dir), compute_type="default", threads=1)
    ct2_hyps, ct2_refs, _ = translate_ct2(translator, task, decode, 4000, max_positions=model.max_decoder_positions())
    assert ct2_refs == refs
    bounds = {}
    for ids, _, width in source_batches(task, decode.subset, 4000):
        bounds.update((i, int(decode.max_len_a * width + decode.max_len_b)) for i in ids)
    return fairseq_hyps, ct2_hyps, refs, [bounds[i] for i in range(len(refs))]


def check_same_but_at_the_bound(fairseq_hyps, ct2_hyps, bounds):
    """Hypotheses are equal, except where an engine's output ran to the length bound: a hypothesis cut
    there is scored with a forced end-of-sentence by fairseq and without one by CTranslate2, so
    the two may choose differently (between two cut ones, or a cut one and a shorter finished one)."""
    differ = [i for i, (a, b) in enumerate(zip(fairseq_hyps, ct2_hyps)) if a != b]
    for i in differ:
        assert bounds[i] in (len(fairseq_hyps[i].split()), len(ct2_hyps[i].split())), (fairseq_hyps[i], ct2_hyps[i])
    finished = [i for i, h in enumerate(fairseq_hyps) if len(h.split()) < bounds[i]]
    assert len(finished) >= len(bounds) // 2  # most outputs end well before the bound: the check says something


def bleu(hyps, refs):
    return sacrebleu.corpus_bleu(hyps, [refs]).score


def test_float32_export_translates_as_fairseq_and_int8_keeps_bleu(served_checkpoint, data_bin, tmp_path):
    assert export(served_checkpoint, data_bin, tmp_path / "f32", "--quantization", "float32") == 0
    info = json.loads((tmp_path / "f32" / "export.json").read_text())
    assert info["quantization"] == "float32" and info["source_arch"] == "transformer_td_tiny"
    assert info["arch"] == "transformer_tiny" and info["ffn_widths"] == {"encoder": [256, 256], "decoder": [256, 256]}
    assert info["commit"] and "export_ctranslate2.py" in info["command"] and info["ctranslate2"].startswith("4.")
    fairseq_hyps, ct2_hyps, refs, bounds = both_engines(served_checkpoint, tmp_path / "f32", data_bin)
    assert bleu(fairseq_hyps, refs) > 10  # a model that translates, so equal output means something
    check_same_but_at_the_bound(fairseq_hyps, ct2_hyps, bounds)

    assert export(served_checkpoint, data_bin, tmp_path / "i8", "--quantization", "int8") == 0
    _, int8_hyps, _, _ = both_engines(served_checkpoint, tmp_path / "i8", data_bin)
    assert abs(bleu(int8_hyps, refs) - bleu(fairseq_hyps, refs)) < 2.0
    assert os.path.getsize(tmp_path / "i8" / "model.bin") < 0.5 * os.path.getsize(tmp_path / "f32" / "model.bin")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_pruned_and_compact_checkpoints_load_in_both_stock_commands(served_checkpoint, data_bin, tmp_path):
    """The user's habit: prune_checkpoint.py / compact_checkpoint.py output goes to the stock
    ct2-fairseq-converter (no --unsafe_deserialization) and to stock fairseq-generate (no env var)."""
    assert cli.run(prune_script.main, [str(served_checkpoint), "--sparsity", "0.5", "--out-dir",
                                       str(tmp_path / "pruned")]) == 0
    compact = tmp_path / "compact.pt"
    assert cli.run(compact_script.main, [str(served_checkpoint), "--unit-sparsity", "0.5", "--out", str(compact)]) == 0
    for ckpt in (tmp_path / "pruned" / "sparsity_0.50.pt", compact):
        out = tmp_path / f"ct2_{ckpt.stem}"
        run_cli("ct2-fairseq-converter", "--model_path", ckpt, "--data_dir", data_bin, "--output_dir", out)
        generated = run_cli("fairseq-generate", data_bin, "--path", ckpt, "--beam", "4", "--cpu", "--max-tokens",
                            "4000", "--max-len-a", "1.2", "--max-len-b", "10", cwd=tmp_path)
        hyps = {int(l.split("\t")[0][2:]): l.split("\t")[2] for l in generated.stdout.splitlines() if l.startswith("D-")}
        fairseq_hyps, ct2_hyps, _, bounds = both_engines(ckpt, out, data_bin)
        assert [hyps[i] for i in range(len(hyps))] == fairseq_hyps
        check_same_but_at_the_bound(fairseq_hyps, ct2_hyps, bounds)


def test_compact_export_has_per_layer_ffn_widths(served_checkpoint, data_bin, tmp_path):
    compact = tmp_path / "in" / "compact.pt"
    compact.parent.mkdir()
    assert cli.run(compact_script.main, [str(served_checkpoint), "--unit-sparsity", "0.75", "--out", str(compact)]) == 0
    assert export(compact, data_bin, tmp_path / "ct2", "--quantization", "float32") == 0
    info = json.loads((tmp_path / "ct2" / "export.json").read_text())
    assert info["ffn_widths"] == {"encoder": [64, 64], "decoder": [64, 64]} and info["compact"]["unit_sparsity"] == 0.75
    fairseq_hyps, ct2_hyps, _, bounds = both_engines(compact, tmp_path / "ct2", data_bin)
    check_same_but_at_the_bound(fairseq_hyps, ct2_hyps, bounds)


def test_what_cannot_be_exported_is_one_line_and_leaves_nothing(served_checkpoint, data_bin, tmp_path, capsys):
    from td_fairseq.files import save_torch
    vision, heads = tmp_path / "in" / "vision.pt", tmp_path / "in" / "heads.pt"
    vision.parent.mkdir()
    save_torch({"version": 1, "arch": {"blocks": 1}, "state_dict": {}, "td": {}}, str(vision))
    assert cli.run(compact_script.main, [str(served_checkpoint), "--unit-sparsity", "0.5", "--heads", "--out",
                                         str(heads)]) == 0
    (tmp_path / "taken").mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f".tmp-{gone.pid}-a").mkdir()  # what an export killed earlier left: removed by the next one
    (tmp_path / f".tmp-{gone.pid}-a" / "model.bin").write_bytes(b"partial")
    cases = [(vision, tmp_path / "a", [], "is a vision checkpoint"),
             (heads, tmp_path / "b", [], "CTranslate2 holds one head count"),
             (served_checkpoint, tmp_path / "taken", [], "exists: an export never overwrites"),
             (served_checkpoint, tmp_path / "c", ["--spm", str(tmp_path / "no.model")], "sentencepiece model not found"),
             (served_checkpoint, tmp_path / "d", ["--quantization", "int4"], "invalid choice")]
    for ckpt, out, extra, expected in cases:
        capsys.readouterr()
        assert export(ckpt, data_bin, out, *extra) == 1, expected
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["in", "taken"]
