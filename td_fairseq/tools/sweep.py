"""BLEU against sparsity: load each checkpoint once, rank its weights once, then for each
level prune in memory, translate with fairseq's generator and score with sacreBLEU.

Evaluation applies exactly the requested pruning to the trained weights and nothing else:
the TD machinery (and so ``--td-eval-mask``) is removed after loading. A baseline's view is
made permanent first (gates, log sigma^2, GMP masks, switches folded into the weights, as
export does), so its model is evaluated as trained; ``score="own"`` then ranks by the
method's own score where it has one (``sparsity.scores``).
"""
import os
import time

import torch

from ..files import UserError, check_out_dir
from ..results import SWEEP_COLUMNS, command_line, git_commit, load_rows, machine, plot_curves, write_rows
from ..sparsity import PruneRanking, check_sparsity, parse_kinds, remove_views, sparsity_report
from ..sparsity.baselines import fold_state_dict
from ..sparsity.scores import own_scores
from ..sparsity.selection import is_weight_matrix_key
from .checkpoint import STOCK_ARCH, arch_of

SCORES = ("magnitude", "own")
COLUMNS = SWEEP_COLUMNS + ["score", "ranked_by", "bleu", "chrf", "retention", "signature", "decode_seconds", "sentences",
                           "beam", "lenpen", "max_len_a", "max_len_b", "device", "command", "commit", "machine"]


def fold_views(model):
    """Fold the baselines' views into plain weights and detach every view (TD included).
    Returns the state dict as it was before, for ``own_scores``."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    folded = fold_state_dict(state)
    remove_views(model)
    model.load_state_dict({k: folded[k] for k in model.state_dict()})
    return state


def load_translation_model(path: str, data_bin: str):
    """(model, task, state before folding) from a checkpoint, views folded and removed;
    one-line errors for bad input."""
    from fairseq import checkpoint_utils

    import td_fairseq.models  # noqa: F401  (TD archs must be registered to load TD checkpoints)
    if not os.path.isdir(data_bin):
        raise UserError(f"data-bin directory not found: {data_bin}")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    overrides = {"data": data_bin}
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, overrides)
    except Exception as error:  # fairseq and torch raise many types for a bad file
        raise UserError(f"cannot read checkpoint {path} (truncated or not a fairseq checkpoint): "
                        f"{str(error).splitlines()[0][:200] if str(error) else type(error).__name__}")
    arch = arch_of(state)
    if arch not in STOCK_ARCH and arch not in STOCK_ARCH.values():
        raise UserError(f"checkpoint {path} has arch {arch!r}, not a Transformer this tool evaluates")
    try:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], overrides, state=state)
    except FileNotFoundError as error:
        raise UserError(f"data-bin {data_bin} lacks a file the checkpoint's task needs: {error.filename or error}")
    except RuntimeError as error:
        if "size mismatch" in str(error):
            raise UserError(f"the dictionary in {data_bin} does not match checkpoint {path} (embedding sizes differ)")
        raise
    state = fold_views(models[0])
    return models[0].eval(), task, state


def translate(model, task, subset: str, beam: int, lenpen: float, max_len_a: float, max_len_b: int,
              max_tokens: int, spm=None, device="cpu"):
    """(hypotheses, references) detokenized, in corpus order, and decoding seconds."""
    from fairseq import utils
    from fairseq.dataclass.configs import GenerationConfig

    dataset = task.dataset(subset)
    generator = task.build_generator([model], GenerationConfig(beam=beam, lenpen=lenpen, max_len_a=max_len_a,
                                                               max_len_b=max_len_b))
    batches = task.get_batch_iterator(
        dataset=dataset, max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=False, seed=1, num_workers=0).next_epoch_itr(shuffle=False)
    tgt_dict = task.target_dictionary
    detok = (lambda s: spm.decode(s.split())) if spm is not None else (lambda s: s)
    # Without a model, undo sentencepiece pieces only if the dictionary holds any.
    pieces = spm is None and any(symbol.startswith("\u2581") for symbol in tgt_dict.symbols)
    bpe = "sentencepiece" if pieces else None
    hyps, refs = [None] * len(dataset), [None] * len(dataset)
    start = time.perf_counter()
    with torch.no_grad():
        for sample in batches:
            if torch.device(device).type == "cuda":
                sample = utils.move_to_cuda(sample, device)
            output = task.inference_step(generator, [model], sample)
            for i, sample_id in enumerate(sample["id"].tolist()):
                hyps[sample_id] = detok(tgt_dict.string(output[i][0]["tokens"].int().cpu(), bpe))
                ref = utils.strip_pad(sample["target"][i], tgt_dict.pad()).int().cpu()
                refs[sample_id] = detok(tgt_dict.string(ref, bpe, escape_unk=True))
    return hyps, refs, time.perf_counter() - start


def load_subset(task, data_bin: str, subset: str) -> int:
    """Load ``subset`` into ``task``; one-line errors for a missing, empty or misaligned one.
    Returns its number of sentences."""
    pair = f"{task.cfg.source_lang}-{task.cfg.target_lang}"
    for lang in (task.cfg.source_lang, task.cfg.target_lang):
        binary = os.path.join(data_bin, f"{subset}.{pair}.{lang}.bin")
        if os.path.isfile(binary) and os.path.getsize(binary) == 0:  # fairseq cannot even open it
            raise UserError(f"the '{subset}' subset of {data_bin} is empty")
    try:
        task.load_dataset(subset)
    except FileNotFoundError:
        raise UserError(f"data-bin {data_bin} has no '{subset}' subset")
    except (ValueError, AssertionError) as error:  # fairseq: an empty .bin, sides of unequal length
        raise UserError(f"cannot load the '{subset}' subset of {data_bin}: {error}")
    if len(task.dataset(subset)) == 0:
        raise UserError(f"the '{subset}' subset of {data_bin} is empty")
    return len(task.dataset(subset))


def read_reference(path: str, expected: int) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise UserError(f"reference file not found: {path}")
    except UnicodeDecodeError:
        raise UserError(f"reference file {path} is not UTF-8")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != expected:
        raise UserError(f"reference {path} has {len(lines)} lines but the test set has {expected} sentences")
    return lines


def bleu_chrf(hyps, refs):
    from sacrebleu.metrics import BLEU, CHRF
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return b.score, c.score, str(bleu.get_signature())


def load_spm(path: str):
    import sentencepiece
    if not os.path.isfile(path):
        raise UserError(f"sentencepiece model not found: {path}")
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as error:
        raise UserError(f"cannot read sentencepiece model {path}: {str(error).splitlines()[0][:200]}")


def add_retention(rows, reference_label):
    if reference_label is None:
        return
    dense = [r["bleu"] for r in rows if r["label"] == reference_label and float(r["requested_sparsity"]) == 0]
    for r in rows:
        r["retention"] = round(r["bleu"] / dense[0], 4) if dense and dense[0] > 0 else ""


def row_key(row):
    return (row["label"], row["checkpoint"], row["mode"], row["scope"], row.get("score") or "magnitude",
            round(float(row["requested_sparsity"]), 6))


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return device


def ranking_scores(state, originals, mode, score):
    """(scores for PruneRanking or None, what was ranked by: the 'ranked_by' column)."""
    if score == "magnitude":
        return None, "magnitude"
    own = {k: v for k, v in own_scores(state, mode).items() if k in originals}
    names = sorted({label for label, _ in own.values()})
    if len(own) < len(originals):
        names.append("magnitude")
    return {k: value for k, (_, value) in own.items()}, "+".join(names)


def run_sweep(data_bin, checkpoints, labels, sparsities, out_dir, mode="weight", scope="unit", kinds="attn,ffn",
              subset="test", beam=5, lenpen=1.0, max_len_a=1.2, max_len_b=10, max_tokens=4000, spm_model=None,
              ref=None, reference_label=None, command=None, progress=True, score="magnitude", device="auto"):
    """Run (or resume) the sweep; rows are written after every level. Returns all rows."""
    try:
        levels = [check_sparsity(s) for s in sparsities]
        kinds = parse_kinds(kinds)
    except ValueError as error:
        raise UserError(str(error))
    if beam < 1:
        raise UserError(f"--beam must be at least 1, got {beam}")
    if score not in SCORES:
        raise UserError(f"--score must be one of {', '.join(SCORES)}, got {score!r}")
    device = resolve_device(device)
    labels = list(labels) if labels else [os.path.splitext(os.path.basename(c))[0] for c in checkpoints]
    if len(labels) != len(checkpoints):
        raise UserError(f"{len(checkpoints)} checkpoints but {len(labels)} labels")
    if reference_label is not None and reference_label not in labels:
        raise UserError(f"--reference-label {reference_label!r} is not one of the labels {labels}")
    spm = load_spm(spm_model) if spm_model is not None else None
    created = not os.path.isdir(out_dir)
    out_dir = check_out_dir(out_dir, *checkpoints)
    if created:  # it can be made; make it at the first row, so that bad input found later leaves nothing
        os.rmdir(out_dir)
    rows = load_rows(out_dir)
    done = {row_key(r) for r in rows}
    from tqdm import tqdm
    # closing the bar ends its line, so an error message starts on a line of its own
    with tqdm(total=len(checkpoints) * len(levels), desc="sweep", disable=not progress, unit="level") as bar:
        for path, label in zip(checkpoints, labels):
            base = {"label": label, "checkpoint": os.path.abspath(path), "mode": mode, "scope": scope,
                    "score": score}
            pending = [s for s in levels if row_key(dict(base, requested_sparsity=s)) not in done]
            bar.update(len(levels) - len(pending))
            if not pending:
                continue
            model, task, state = load_translation_model(path, data_bin)
            model.to(device)
            sentences = load_subset(task, data_bin, subset)
            references = read_reference(ref, sentences) if ref else None
            params = dict(model.named_parameters())
            # ranked and pruned on the CPU, copied into the model wherever it runs
            originals = {k: p.detach().cpu().clone() for k, p in params.items() if is_weight_matrix_key(k, p, kinds)}
            if not originals:
                raise UserError(f"--targets {','.join(kinds)} selects no weight of {path} "
                                f"(a tied output projection is the embedding: use --targets embed)")
            scores, base["ranked_by"] = ranking_scores(state, originals, mode, score)
            ranking = PruneRanking(originals, mode, scope, scores)
            for sparsity in pending:
                pruned = ranking.prune(originals, sparsity)
                with torch.no_grad():
                    for name, tensor in pruned.items():
                        params[name].copy_(tensor)
                hyps, refs, seconds = translate(model, task, subset, beam, lenpen, max_len_a, max_len_b,
                                                max_tokens, spm, device)
                bleu, chrf, signature = bleu_chrf(hyps, references or refs)
                measured = round(sparsity_report(pruned)["global"], 6)
                rows.append(dict(base, requested_sparsity=sparsity, measured_sparsity=measured,
                                 bleu=round(bleu, 2), chrf=round(chrf, 2), retention="", signature=signature,
                                 decode_seconds=round(seconds, 2), sentences=len(hyps), beam=beam, lenpen=lenpen,
                                 max_len_a=max_len_a, max_len_b=max_len_b, device=device, command=command or command_line(),
                                 commit=git_commit(), machine=machine()))
                add_retention(rows, reference_label)
                os.makedirs(out_dir, exist_ok=True)
                write_rows(out_dir, rows, COLUMNS)
                plot_curves(rows, "bleu", os.path.join(out_dir, "bleu_vs_sparsity.png"), "BLEU (sacreBLEU)",
                            f"{mode} pruning, scope {scope}")
                bar.update(1)
    return rows


def format_table(rows) -> str:
    """BLEU per sparsity level (rows) and label (columns)."""
    labels = list(dict.fromkeys(r["label"] for r in rows))
    levels = sorted({float(r["requested_sparsity"]) for r in rows})
    cell = {(r["label"], float(r["requested_sparsity"])): r for r in rows}
    lines = ["| pruned | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    for s in levels:
        values = [f"{cell[(l, s)]['bleu']:.2f}" if (l, s) in cell else "" for l in labels]
        lines.append(f"| {s * 100:.0f} % | " + " | ".join(values) + " |")
    return "\n".join(lines)
