"""The fairseq calibration adapter: training split only, every attention and FFN matrix seen."""
import shutil

import pytest
import torch

from td_fairseq.files import UserError
from td_fairseq.sparsity.calibration import collect, weight_modules
from td_fairseq.sparsity.patterns import follows_pattern
from td_fairseq.sparsity.pruners import make_pruner
from td_fairseq.sparsity.selection import is_weight_matrix_key
from td_fairseq.tools.calibration import calibration_batches, calibration_feed, make_feed


@pytest.fixture(scope="module")
def no_test_bin(data_bin, tmp_path_factory):
    """The data-bin without its test split: reading it would fail."""
    dest = tmp_path_factory.mktemp("calib") / "bin"
    shutil.copytree(data_bin, dest, ignore=shutil.ignore_patterns("test.*"))
    return dest


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (50x slower on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def task_and_model(data_dir):
    """(task on ``data_dir``, tiny model, the list of splits the task loads)."""
    from fairseq import tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    from td_fairseq.tools.inprocess import parse_args
    args = parse_args("transformer_td_tiny", ["--td-type", "none", "--source-lang", "en", "--target-lang", "de",
                                              "--share-all-embeddings"], data=str(data_dir))
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    read = []
    original = task.load_dataset
    task.load_dataset = lambda split, **kw: (read.append(split), original(split, **kw))[1]
    return task, task.build_model(cfg.model), read


def matrices(model):
    return {k: p for k, p in model.named_parameters() if is_weight_matrix_key(k, p)}


def test_every_attention_and_ffn_matrix_gets_statistics_from_train_only(no_test_bin):
    task, model, read = task_and_model(no_test_bin)
    model.train()
    feed, info = calibration_feed(model, task, sentences=12, seed=1)
    weights = matrices(model)
    kinds = {k.split(".layers.")[1].split(".", 1)[1].rsplit(".", 1)[0] for k in weights}
    assert kinds == {f"{a}.{p}_proj" for a in ("self_attn", "encoder_attn") for p in "qkv"} | {
        "self_attn.out_proj", "encoder_attn.out_proj", "fc1", "fc2"}
    stats = collect(weight_modules(model, weights), feed, "square")
    assert len(stats) == 32  # 2 encoder layers x 6 matrices + 2 decoder layers x 10
    assert all(e.tokens > 0 and bool((e.total > 0).any()) for e in stats.values())
    tokens = {k: e.tokens for k, e in stats.items()}
    assert tokens["decoder.layers.1.encoder_attn.k_proj.weight"] == tokens["encoder.layers.0.fc2.weight"]
    assert tokens["decoder.layers.1.encoder_attn.q_proj.weight"] == tokens["decoder.layers.0.fc1.weight"]
    assert read == ["train"] and info["calib_split"] == "train" and info["calib_sentences"] == 12
    assert model.training  # mode restored
    assert not any(getattr(m, "skip_embed_dim_check", False) for m in model.modules())
    # without the adapter's switch, the attention fast path never calls the projections
    batches, _ = calibration_batches(task, sentences=4)

    def plain_feed():
        with torch.no_grad():
            model.eval()
            for net_input in batches:
                model(**net_input)
    with pytest.raises(ValueError, match="no input for"):
        collect(weight_modules(model, weights), plain_feed, "square")


def test_split_rules(no_test_bin, data_bin):
    task, _, read = task_and_model(no_test_bin)
    for split in ("test", "valid"):
        with pytest.raises(UserError, match="'train' split"):
            calibration_batches(task, split=split)
    _, info = calibration_batches(task, sentences=5, split="valid", allow_valid=True)
    assert info["calib_split"] == "valid" and read == ["valid"]
    with pytest.raises(UserError, match="'test' split|'train' split"):
        calibration_batches(task, split="test", allow_valid=True)
    bare = no_test_bin.parent / "bare"
    shutil.copytree(no_test_bin, bare, ignore=shutil.ignore_patterns("train.*"))
    with pytest.raises(UserError, match="no 'train' split"):
        calibration_batches(task_and_model(bare)[0])


def test_draws_are_seeded_and_capped(no_test_bin):
    task, _, _ = task_and_model(no_test_bin)
    first, info = calibration_batches(task, sentences=20, seed=3, batch_sentences=8)
    again, _ = calibration_batches(task, sentences=20, seed=3, batch_sentences=8)
    other, _ = calibration_batches(task, sentences=20, seed=4, batch_sentences=8)
    assert [b["src_tokens"].shape[0] for b in first] == [8, 8, 4]
    assert all(torch.equal(a["src_tokens"], b["src_tokens"]) for a, b in zip(first, again))
    assert not all(torch.equal(a["src_tokens"], b["src_tokens"]) for a, b in zip(first, other))
    assert info == {"calib_split": "train", "calib_sentences": 20, "calib_seed": 3,
                    "calib_src_tokens": sum(int(b["src_lengths"].sum()) for b in first),
                    "calib_tgt_tokens": info["calib_tgt_tokens"]}
    assert calibration_batches(task, sentences=10 ** 6)[1]["calib_sentences"] == len(task.dataset("train"))


@pytest.mark.parametrize("kind,groups,pattern", [("sparsegpt", "row", None), ("sparsegpt", "block", "2:4"),
                                                 ("wanda", "row", "2:4")])
def test_pruners_on_a_tiny_transformer(no_test_bin, kind, groups, pattern):
    task, model, _ = task_and_model(no_test_bin)
    feed, info = calibration_feed(model, task, sentences=16)
    weights = matrices(model)
    before = {k: p.detach().clone() for k, p in weights.items()}
    pruner = make_pruner(kind, model, weights, feed, groups, info)
    new = pruner.prune(0.5 if pattern is None else None, pattern)
    assert set(new) == set(weights) and pruner.info["calib_split"] == "train"
    for name, tensor in new.items():
        assert torch.equal(weights[name], before[name])  # the model is left as found
        if pattern is None:
            assert ((tensor == 0).sum(1) == tensor.shape[1] // 2).all()
        else:
            assert follows_pattern(tensor, (2, 4))
    if kind == "sparsegpt":
        # per layer: q/k/v, out, fc1, fc2, and in the decoder cross q, out; every cross k/v in one
        assert pruner.info["passes"] == 2 * 4 + 2 * 6 + 1
        name = "decoder.layers.1.fc2.weight"
        kept = new[name] != 0
        assert not torch.allclose(new[name][kept], before[name][kept])


def test_feed_moves_batches_and_restores_mode(no_test_bin):
    task, model, _ = task_and_model(no_test_bin)
    batches, _ = calibration_batches(task, sentences=3)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(kw)), with_kwargs=True)
    model.eval()
    make_feed(model, batches)()
    assert seen == [["prev_output_tokens", "src_lengths", "src_tokens"]] and not model.training
