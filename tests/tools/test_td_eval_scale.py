"""TD's eval scale folded wherever views become plain weights: stock export, pruned checkpoints,
the sweep's loader, and the sweep's --td-eval-scale rows."""
import argparse
import json
import os

import pytest
import torch

from td_fairseq import cli
from td_fairseq.files import UserError, save_torch
from td_fairseq.sparsity import td_rates, targeted_unit_mask, targeted_weight_mask, views_of
from td_fairseq.tools.checkpoint import stock_checkpoint
from td_fairseq.tools.inprocess import random_checkpoint, sample, write_dictionaries
from td_fairseq.tools.loading import load_checkpoint, load_translation_model

from .test_checkpoint import prune_script
from .test_sweep import rows_of, sweep, sweep_script

VOCAB = 40
TD = ["--td-gamma", "0.5", "--td-alpha", "0.6", "--td-ramp-updates", "4"]
UPDATES = 6  # gamma_t = 0.95 * 0.5 + 0.05 * 0.5 * 2 / 4 = 0.4875, alpha_t = 0.6 * 6 / 8 = 0.45


def td_checkpoint(directory, extra=(), name="td.pt"):
    """A TD checkpoint as fairseq-train saves one (TD arch, view state, update count), untrained."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf
    if not os.path.exists(os.path.join(directory, "dict.en.txt")):
        write_dictionaries(str(directory), VOCAB)
    ns = options.parse_args_and_arch(options.get_training_parser(), [
        str(directory), "--task", "translation", "--arch", "transformer_td_tiny", "--source-lang", "en",
        "--target-lang", "de", "--share-all-embeddings", *TD, *extra])
    cfg = convert_namespace_to_omegaconf(ns)
    torch.manual_seed(1)
    model = tasks.setup_task(cfg.task).build_model(cfg.model)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["model"] = vars(plain["model"]) if isinstance(plain["model"], argparse.Namespace) else plain["model"]
    path = os.path.join(directory, name)
    save_torch({"cfg": plain, "model": model.state_dict(), "args": None, "extra_state": {},
                "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "none",
                                       "lr_scheduler_state": {}, "num_updates": UPDATES}]}, path)
    return path


def load(path, directory):
    from fairseq import checkpoint_utils
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(path)], {"data": str(directory)})
    return models[0].eval(), task.source_dictionary


def logits(model, vocab):
    with torch.no_grad():
        return model(**sample(vocab, seed=1)["net_input"])[0]


def save_stock(path, out, td_eval_scale=None):
    save_torch(stock_checkpoint(load_checkpoint(path), td_eval_scale), str(out))
    return out


@pytest.mark.parametrize("td_type", ["weight", "unit", "weight_random"])
def test_stock_and_pruned_checkpoints_compute_the_eval_mode_td_model(tmp_path, td_type):
    ckpt = td_checkpoint(tmp_path, ["--td-type", td_type, "--td-eval-scale"])
    td_model, vocab = load(ckpt, tmp_path)
    assert all(m.td.num_updates == UPDATES and m.td.config.eval_scale for _, m in views_of(td_model))
    expected = logits(td_model, vocab)
    stock, _ = load(save_stock(ckpt, tmp_path / "stock.pt"), tmp_path)
    assert not views_of(stock) and type(stock).__name__ == "TransformerModel"
    assert torch.allclose(logits(stock, vocab), expected, atol=1e-6)
    plain, _ = load(save_stock(ckpt, tmp_path / "plain.pt", td_eval_scale=False), tmp_path)
    assert not torch.allclose(logits(plain, vocab), expected, atol=1e-3)  # the fold matters
    out = tmp_path / "pruned"
    assert cli.run(prune_script.main, [ckpt, "--sparsity", "0", "--td-eval-scale", "--out-dir", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["td_eval_scale"] is True
    pruned, _ = load(out / "sparsity_0.00.pt", tmp_path)
    assert torch.allclose(logits(pruned, vocab), expected, atol=1e-6)


def test_loader_override_scales_at_the_saved_update_count(tmp_path):
    """A plain TD checkpoint evaluated as if trained with --td-eval-scale, and back."""
    ckpt = td_checkpoint(tmp_path)
    raw = torch.load(ckpt, weights_only=False)["model"]
    scaled, _, _ = load_translation_model(ckpt, str(tmp_path), td_eval_scale=True)
    gamma, alpha = td_rates(UPDATES, 0.5, 0.6, 4)
    assert alpha == pytest.approx(0.45)
    key = "encoder.layers.0.fc1.weight"
    expected = raw[key] * (1 - alpha * targeted_weight_mask(raw[key], gamma).float())
    assert torch.allclose(scaled.state_dict()[key], expected, rtol=1e-6, atol=0)
    exported = stock_checkpoint(load_checkpoint(ckpt), td_eval_scale=True)["model"]  # the state-dict path
    assert all(torch.equal(exported[k], v) for k, v in scaled.state_dict().items())
    for override in (None, False):  # the checkpoint's own option (off), or off
        model, _, _ = load_translation_model(ckpt, str(tmp_path), td_eval_scale=override)
        assert torch.equal(model.state_dict()[key], raw[key])
    own = td_checkpoint(tmp_path, ["--td-eval-scale"], name="own.pt")
    assert torch.equal(load_translation_model(own, str(tmp_path))[0].state_dict()[key], scaled.state_dict()[key])
    assert torch.equal(load_translation_model(own, str(tmp_path), False)[0].state_dict()[key], raw[key])


def test_checkpoints_without_targeted_dropout_are_refused_in_one_line(tmp_path, capsys):
    write_dictionaries(str(tmp_path), VOCAB)
    cases = {"stock": random_checkpoint(str(tmp_path), ["--encoder-layers", "1", "--decoder-layers", "1"]),
             "td none": td_checkpoint(tmp_path, ["--td-type", "none"], name="none.pt"),
             "baseline": td_checkpoint(tmp_path, ["--sparsity-method", "l0"], name="l0.pt")}
    for case, path in cases.items():
        capsys.readouterr()
        out = tmp_path / "out"
        assert cli.run(prune_script.main, [path, "--sparsity", "0.5", "--td-eval-scale", "--out-dir", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not a targeted-dropout checkpoint" in err[0], (case, err)
        assert not out.exists(), case
        with pytest.raises(UserError, match="is not a targeted-dropout checkpoint"):
            load_translation_model(path, str(tmp_path), td_eval_scale=True)


def test_a_tied_weight_targeted_on_one_side_only_is_refused(tmp_path, capsys):
    ckpt = td_checkpoint(tmp_path, ["--td-targets", "attn,ffn,embed", "--td-eval-scale"])
    assert cli.run(prune_script.main, [ckpt, "--sparsity", "0.5", "--out-dir", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert cli.run(prune_script.main, [ckpt, "--sparsity", "0.5", "--td-eval-scale", "--out-dir",
                                       str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ties its embedding and output projection" in err[0], err
    with pytest.raises(UserError, match="shares its weight with"):
        load_translation_model(ckpt, str(tmp_path))  # the model path finds the same conflict


def test_sweep_keeps_plain_and_eval_scaled_rows_side_by_side(trained_checkpoint, data_bin, tmp_path, monkeypatch):
    from td_fairseq.tools import sweep as sweep_module
    key, loaded, real = "decoder.layers.1.fc2.weight", [], sweep_module.load_translation_model

    def spy(path, data_bin, td_eval_scale=None):  # the weights each sweep decodes with
        model, task, state = real(path, data_bin, td_eval_scale)
        loaded.append(model.state_dict()[key].clone())
        return model, task, state

    monkeypatch.setattr(sweep_module, "load_translation_model", spy)
    out = tmp_path / "s"
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5]) == 0
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5], "--td-eval-scale") == 0
    rows = rows_of(out)
    assert [(r["td_eval_scale"], r["requested_sparsity"]) for r in rows] == [
        (False, 0.0), (False, 0.5), (True, 0.0), (True, 0.5)]
    assert "td_eval_scale" in (out / "results.csv").read_text().splitlines()[0].split(",")
    state = load_checkpoint(trained_checkpoint)
    assert torch.equal(loaded[0], state["model"][key])
    assert torch.equal(loaded[1], stock_checkpoint(state, td_eval_scale=True)["model"][key])
    assert not torch.equal(loaded[0], loaded[1])
    plain, scaled = rows[0], rows[2]
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5], "--td-eval-scale") == 0
    assert sweep(data_bin, trained_checkpoint, out, [0.5]) == 0
    assert len(rows_of(out)) == 4 and len(loaded) == 2  # both kinds of row are found again: nothing recomputed
    older = [{k: v for k, v in r.items() if k != "td_eval_scale"} for r in rows_of(out)]
    (out / "results.json").write_text(json.dumps(older))  # rows written before the column: plain ones
    assert sweep(data_bin, trained_checkpoint, out, [0, 0.5]) == 0
    assert len(rows_of(out)) == 4 and len(loaded) == 2
    from td_fairseq.tools.sweep import series
    assert series(scaled) == "td [eval-scaled]" and series(plain) == "td"


def test_sweep_refuses_a_checkpoint_without_targeted_dropout(trained_checkpoint, data_bin, tmp_path, capsys):
    stock = save_stock(trained_checkpoint, tmp_path / "stock.pt")
    out = tmp_path / "s"
    argv = ["--data-bin", str(data_bin), "--checkpoint", str(stock), "--sparsity", "0", "--beam", "1",
            "--no-progress", "--out", str(out), "--td-eval-scale"]
    assert cli.run(sweep_script.main, argv) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(err) == 1 and "is not a targeted-dropout checkpoint" in err[0], err
    assert not out.exists()


def test_unit_sweep_of_a_unit_td_model_plain_and_eval_scaled(data_bin, tmp_path, monkeypatch):
    """unit_td's unit sweeps (multi30k.yaml's unit and unit_eval_scale): below gamma the eval-scaled
    sweep keeps the targeted units at 1 - alpha; from gamma up they are the units it prunes, so both
    sweeps decode the same weights."""
    import shutil
    from td_fairseq.tools import sweep as sweep_module
    shutil.copytree(data_bin, tmp_path / "bin")  # the data's dictionaries, so the sweep can decode it
    ckpt = td_checkpoint(tmp_path / "bin", ["--td-type", "unit"])
    key, decoded, real = "encoder.layers.0.fc1.weight", [], sweep_module.TranslationEvaluator

    class Spy(real):
        def __call__(self, level):
            decoded.append(self.model.state_dict()[key].detach().clone())
            return super().__call__(level)

    monkeypatch.setattr(sweep_module, "TranslationEvaluator", Spy)
    unit = ["--mode", "unit", "--score", "own"]
    assert sweep(tmp_path / "bin", ckpt, tmp_path / "plain", [0.25, 0.5], *unit) == 0
    assert sweep(tmp_path / "bin", ckpt, tmp_path / "scaled", [0.25, 0.5], *unit, "--td-eval-scale") == 0
    assert [(r["mode"], r["td_eval_scale"]) for r in rows_of(tmp_path / "scaled")] == [("unit", True)] * 2
    plain_25, plain_50, scaled_25, scaled_50 = decoded
    raw = torch.load(ckpt, weights_only=False)["model"][key]
    gamma, alpha = td_rates(UPDATES, 0.5, 0.6, 4)
    targeted = targeted_unit_mask(raw, gamma).view(-1)  # the bottom-gamma units (rows), as the view picks them
    kept = plain_25.norm(dim=1) > 0
    assert kept.sum() == len(raw) - round(0.25 * len(raw)) and (targeted & kept).any()
    assert torch.allclose(scaled_25[kept & targeted], raw[kept & targeted] * (1 - alpha))
    assert torch.equal(scaled_25[kept & ~targeted], raw[kept & ~targeted])
    assert gamma < 0.5 and torch.equal(plain_50, scaled_50) and (plain_50[targeted] == 0).all()
