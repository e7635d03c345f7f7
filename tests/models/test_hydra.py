"""fairseq-hydra-train with a YAML model section: the option table as a fairseq dataclass."""
import torch

from ..conftest import REPO, run_cli

YAML = """
common: {{cpu: true, seed: 1, log_format: simple, log_interval: 1, user_dir: {repo}/td_fairseq{common}}}
task: {{_name: translation, data: {data}}}
criterion: {{_name: label_smoothed_cross_entropy_td, label_smoothing: 0.1}}
optimizer: {{_name: adam}}
lr_scheduler: {{_name: fixed}}
optimization: {{lr: [0.001], max_update: 2}}
dataset: {{max_tokens: 2000, num_workers: 0}}
checkpoint: {{save_dir: {save}, no_epoch_checkpoints: true}}
model: {{_name: transformer_td_tiny, share_all_embeddings: true, {model}}}
"""


def hydra_train(tmp_path, data_bin, model, check=True, common=""):
    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / "td.yaml").write_text(YAML.format(repo=REPO, data=data_bin, save=tmp_path / "save",
                                                          model=model, common=common))
    return run_cli("fairseq-hydra-train", "--config-dir", tmp_path / "cfg", "--config-name", "td",
                   f"hydra.run.dir={tmp_path / 'hydra'}", check=check, cwd=tmp_path)


def test_a_yaml_model_section_trains_with_targeted_dropout(data_bin, tmp_path):
    result = hydra_train(tmp_path, data_bin, "td_type: weight, td_gamma: 0.5, td_alpha: 0.25")
    assert "td_gamma=0.5, td_alpha=0.25" in result.stdout + result.stderr
    model = torch.load(tmp_path / "save" / "checkpoint_last.pt", weights_only=False)["cfg"]["model"]
    assert (model["td_gamma"], model["td_alpha"], model["td_type"]) == (0.5, 0.25, "weight")


def test_a_misspelt_or_mistyped_option_is_refused(data_bin, tmp_path):
    result = hydra_train(tmp_path, data_bin, "td_gama: 0.5", check=False)
    assert result.returncode != 0 and "unknown model option 'td_gama' (did you mean 'td_gamma'?)" in result.stderr
    result = hydra_train(tmp_path, data_bin, "td_gamma: lots", check=False)
    assert result.returncode != 0 and "td_gamma" in result.stderr


def test_common_bf16_trains_under_autocast_over_fp32_weights_as_the_command_line_does(data_bin, tmp_path):
    hydra_train(tmp_path, data_bin, "td_type: weight, td_gamma: 0.5, td_alpha: 0.5", common=", bf16: true")
    state = torch.load(tmp_path / "save" / "checkpoint_last.pt", weights_only=False)
    # fairseq's own bf16 path would cast the model (and rank TD) in bf16, and say so in the checkpoint
    assert (state["cfg"]["common"]["bf16"], state["cfg"]["model"]["autocast_bf16"]) == (False, True)
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float32}
