"""The paper's baselines on the ResNet: training, penalties, folding at load, the script."""
import dataclasses
import json

import pytest
import torch

from td_fairseq.sparsity import TDConfig, apply_targeted_dropout, views_of
from td_fairseq.sparsity.baselines import METHODS, BaselineConfig, apply_baseline
from td_fairseq.files import save_torch
from td_fairseq.vision import (ResNet, TrainConfig, accuracy, load_checkpoint, load_digits, make_checkpoint,
                               regularization_loss, td_selector, train_resnet)
from td_fairseq.vision.train import decay_groups

from .conftest import load_script

ARCH = dict(blocks=1, widths=(4, 8, 8))
TINY = {"name": "resnet32", **ARCH}
# enough to move every view's state in 4 updates (256 images, batch 64)
OPTIONS = dict(drop_rate=0.3, l1_coef=1e-3, l0_coef=1e-3, vd_coef=1e-2, gmp_sparsity=0.5, gmp_steps=2,
               gmp_interval=1, smallify_coef=1e-3)
STATEFUL = ("l0", "variational", "gmp", "smallify")


@pytest.fixture(scope="module")
def small():
    digits = load_digits()
    return dataclasses.replace(digits, train_x=digits.train_x[:256], train_y=digits.train_y[:256])


def run(data, method, seed=0, **options):
    baseline = BaselineConfig(method, **dict(OPTIONS, **options))
    return train_resnet(data, TDConfig(), TrainConfig(epochs=1, batch_size=64, seed=seed), TINY, baseline=baseline)


@pytest.fixture(scope="module")
def trained(small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines")
    out = {}
    for method in STATEFUL:
        path = str(folder / f"{method}.pt")
        save_torch(run(small, method), path)
        out[method] = path
    return out


def td_targets():
    return sorted(apply_targeted_dropout(ResNet(**ARCH, in_channels=1), TDConfig(), td_selector))


@pytest.mark.parametrize("method", METHODS)
def test_every_baseline_trains_on_the_td_targets(small, method):
    checkpoint = run(small, method)
    metrics = checkpoint["metrics"]
    assert metrics["td_modules"] == td_targets() and len(td_targets()) == 8
    assert metrics["sparsity_method"] == method and metrics["test_accuracy_eval_mask"] is None
    assert metrics["test_accuracy_as_configured"] == metrics["test_accuracy"]
    assert checkpoint["baseline"]["method"] == method and checkpoint["td"]["td_type"] == "none"
    view_keys = {k.split(".td.")[0] for k in checkpoint["state_dict"] if ".td." in k}
    assert view_keys == (set(td_targets()) if method in STATEFUL else set())
    entry = checkpoint["history"][0]
    assert entry["updates"] == 4 and torch.isfinite(torch.tensor(entry["train_loss"]))
    assert (entry["reg_loss"] > 0) == (method in ("l1", "l0", "variational", "smallify"))


def test_the_loop_tells_the_views_the_update_count(trained):
    gmp, _ = load_checkpoint(trained["gmp"], with_td=True)
    smallify, _ = load_checkpoint(trained["smallify"], with_td=True)
    for name, module in views_of(gmp):
        assert int(module.td.mask_step) == 2  # the last of 2 mask updates, after 4 updates
        assert 0.4 < module.td.mask.float().mean() <= 0.5, name
    for _, module in views_of(smallify):
        assert (module.td.sign_mean > 0).all()  # the statistics moved: num_updates > 0 reached them


def test_regularization_loss_sums_every_view():
    model = ResNet(**ARCH, in_channels=1)
    assert regularization_loss(model) is None
    apply_baseline(model, BaselineConfig("l1", l1_coef=0.5), td_selector)
    expected = 0.5 * sum(model.get_submodule(n)._parameters["weight"].abs().sum() for n in td_targets())
    assert torch.allclose(regularization_loss(model), expected)


def test_l1_penalty_reaches_the_loss(small):
    def l1_norm(checkpoint):
        return sum(float(checkpoint["state_dict"][f"{n}.weight"].abs().sum()) for n in td_targets())
    assert l1_norm(run(small, "l1", l1_coef=0.2)) < 0.8 * l1_norm(run(small, "l1", l1_coef=0.0))


def test_views_parameters_get_no_weight_decay():
    model = ResNet(**ARCH, in_channels=1)
    views = apply_baseline(model, BaselineConfig("l0"), td_selector)
    decayed = {id(p) for p in decay_groups(model, 1e-4)[0]["params"]}
    assert all(id(view.log_alpha) not in decayed for view in views.values())
    assert id(model.stages[0][0].conv1._parameters["weight"]) in decayed


@pytest.mark.parametrize("method", STATEFUL)
def test_loaded_model_is_folded_and_matches_the_views(small, trained, method):
    viewed, checkpoint = load_checkpoint(trained[method], with_td=True)
    folded, _ = load_checkpoint(trained[method])
    assert len(views_of(viewed)) == 8 and not views_of(folded)
    assert not any(".td." in k for k in folded.state_dict())
    x = small.test_x
    with torch.no_grad():
        assert torch.equal(viewed.eval()(x), folded.eval()(x))
    assert accuracy(folded, x, small.test_y) == checkpoint["metrics"]["test_accuracy"]
    raw = checkpoint["state_dict"]["stages.1.0.conv1.weight"]
    assert not torch.equal(folded.stages[1][0].conv1.weight, raw)  # the views were folded in


def test_checkpoint_without_baseline_key_still_loads(tmp_path):
    model = ResNet(**ARCH, in_channels=1)
    checkpoint = make_checkpoint(model, TDConfig(), {}, "digits", [], {}, "", "")
    assert checkpoint["baseline"] is None
    del checkpoint["baseline"]  # as written before the baselines came to vision
    save_torch(checkpoint, str(tmp_path / "old.pt"))
    plain, _ = load_checkpoint(str(tmp_path / "old.pt"))
    with_td, _ = load_checkpoint(str(tmp_path / "old.pt"), with_td=True)
    assert not views_of(plain) and len(views_of(with_td)) == 8
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in plain.state_dict().items())


def test_script_trains_a_baseline(tmp_path, capsys):
    vision_train = load_script("vision_train")
    path = str(tmp_path / "l0.pt")
    argv = ["--dataset", "digits", "--blocks", "1", "--widths", "4", "8", "8", "--epochs", "1", "--quiet",
            "--sparsity-method", "l0", "--l0-form", "unit", "--out", path]
    assert vision_train.main(argv) == 0
    assert '"sparsity_method": "l0"' in capsys.readouterr().out
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["baseline"]["l0_form"] == "unit" and checkpoint["baseline"]["l0_coef"] == 1e-6
    assert checkpoint["state_dict"]["stages.0.0.conv1.td.log_alpha"].shape == (4, 1, 1, 1)
    out = tmp_path / "sweep"
    assert load_script("accuracy_vs_sparsity").main(["--checkpoint", path, "--sparsity", "0", "0.5",
                                                     "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert rows[0]["baseline"]["method"] == "l0" and "folded" in rows[0]["evaluation"]
    assert rows[0]["accuracy"] == checkpoint["metrics"]["test_accuracy"]  # 0 %: the eval-mode model
