"""Serving speed: fairseq (fp32, bf16) against CTranslate2 (float32, int8, ...), dense, pruned and compact.

1. WMT-base shape (6+6 layers, dim 512, FFN 2048, 8 heads; random weights, a made-up dictionary):
   CTranslate2 int8, dense against FFN units compacted by 50 %. Every output is forced to the same
   length (min = max decoding length), so both decode the same number of steps.
2. With --checkpoint/--data-bin (a trained model): sentences per second on the subset and BLEU, for
   the dense model, 50 % unstructured magnitude pruning (prune_checkpoint.py) and FFN units compacted
   by 25/50/75 % (compact_checkpoint.py), each in fairseq fp32, fairseq bf16 (torch.autocast, as the
   sweep's --bf16 decode) and CTranslate2 in every compute type this CPU has. CTranslate2's batching
   is tuned first on the dense model (fairseq's batches, or one call rebatched by tokens).

Every timing is taken in a fresh process (this file run with --worker SPEC-JSON) that loads one
model or one translator, uses --threads, decodes once to warm up, times one pass and exits: in an
earlier in-process run, live CTranslate2 translators slowed fairseq 1.8x (RESULTS §13). --repeats R
runs R rounds, each starting every (model, engine) once, one process after another, the order
reversed every other round; medians kept. The parent prunes, compacts and exports only.

    python benchmarks/serve_speed.py [--checkpoint CKPT --data-bin BIN [--spm SPM] [--ref REF]]
        [--threads 2] [--beam 4] [--repeats 3] [--skip-wmt] [--json OUT.json]
"""
import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BATCHINGS = {"fairseq batches": (None, 0, "examples"), "one call, 1024 tokens": (10 ** 9, 1024, "tokens"),
             "one call, 4096 tokens": (10 ** 9, 4096, "tokens")}  # (max_tokens, max_batch_size, batch_type)


def medians(runs: dict, repeats: int) -> dict:
    """{name: median seconds} of ``runs`` ({name: () -> seconds}), interleaved, after one warm-up pass."""
    times = {name: [] for name in runs}
    for repeat in range(repeats + 1):
        for name in (list(runs) if repeat % 2 else list(runs)[::-1]):
            seconds = runs[name]()
            if repeat:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


# ---- the worker: one process, one model or translator -------------------------------------------
def wmt_runs(spec: dict) -> dict:
    """{batching: () -> (None, None, seconds)}: the WMT-shape translator on its random sources."""
    from td_fairseq.tools.ctranslate2_translate import load_translator
    translator = load_translator(spec["model_dir"], compute_type=spec["compute_type"], threads=spec["threads"])
    g = torch.Generator().manual_seed(0)  # every worker, every round: the same sources
    sources = [[f"w{int(i)}" for i in torch.randint(0, spec["vocab"], (spec["src_len"],), generator=g)]
               for _ in range(spec["sentences"])]

    def run():
        start = time.perf_counter()
        translator.translate_batch(sources, beam_size=spec["beam"], max_decoding_length=spec["out_len"],
                                   min_decoding_length=spec["out_len"], max_batch_size=spec["batch_tokens"],
                                   batch_type="tokens")
        return None, None, time.perf_counter() - start
    return {f"max_batch_size {spec['batch_tokens']} tokens": run}


def trained_runs(spec: dict) -> dict:
    """{batching: () -> (hyps, refs, seconds)}: fairseq, or one CTranslate2 translator, on the subset."""
    from td_fairseq.tools.ctranslate2_translate import load_translator, translate_ct2
    from td_fairseq.tools.loading import load_translation_model
    from td_fairseq.tools.translate import DecodeConfig, load_spm, load_subset, translate
    decode = DecodeConfig(spec["subset"], spec["beam"], 1.0, spec["max_len_a"], spec["max_len_b"],
                          dtype=spec.get("dtype", "fp32"))  # bf16: the sweep's --bf16 decode (autocast)
    spm = load_spm(spec["spm"]) if spec["spm"] else None
    model, task, _ = load_translation_model(spec["checkpoint"], spec["data_bin"])
    load_subset(task, spec["data_bin"], spec["subset"])
    if "compute_type" not in spec:
        return {"fairseq batches": lambda: translate(model, task, decode, spec["max_tokens"], spm)}
    max_positions = model.max_decoder_positions()
    del model  # the translator is this process's one model
    translator = load_translator(spec["model_dir"], compute_type=spec["compute_type"], threads=spec["threads"])

    def run(batching):
        max_tokens, size, kind = BATCHINGS[batching]
        return translate_ct2(translator, task, decode, max_tokens or spec["max_tokens"], spm, max_positions, size,
                             kind)
    return {b: (lambda b=b: run(b)) for b in spec["batchings"]}


def worker(spec: dict) -> dict:
    """{"seconds": {batching: median}, "bleu", "sentences", "pid", "threads"}: ``spec["passes"]`` timed
    passes per batching (default 1), interleaved, after one warm-up pass each."""
    torch.set_num_threads(spec["threads"])
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    runs = (wmt_runs if spec["kind"] == "wmt" else trained_runs)(spec)
    outputs = {}

    def timed(name):
        hyps, refs, seconds = runs[name]()
        outputs[name] = hyps, refs
        return seconds
    seconds = medians({name: (lambda name=name: timed(name)) for name in runs}, spec.get("passes", 1))
    record = {"seconds": seconds, "pid": os.getpid(), "threads": torch.get_num_threads()}
    hyps, refs = outputs[next(iter(runs))]
    if hyps is not None:
        from td_fairseq.tools.translate import bleu_chrf, read_reference
        references = read_reference(spec["ref"], len(refs)) if spec["ref"] else refs
        record.update(bleu=round(bleu_chrf(hyps, references)[0], 2), sentences=len(hyps))
    return record


def worker_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    from td_fairseq.files import write_json
    spec = json.loads(argv[1])
    write_json(spec["record"], worker(spec))


def run_worker(spec: dict) -> dict:
    """The record of one fresh ``--worker`` process, run with the parent's thread count; its failure
    is one line."""
    from td_fairseq.files import UserError
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    with tempfile.TemporaryDirectory() as tmp:
        record = os.path.join(tmp, "record.json")
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                               json.dumps(dict(spec, record=record))], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
            raise UserError(f"the worker timing {spec['label']} failed: {lines[-1]}")
        with open(record, encoding="utf-8") as f:
            return json.load(f)


def rounds(specs: dict, repeats: int) -> dict:
    """{key: [record per round]}: each round starts every spec's worker once, one after another, the
    order reversed every other round."""
    records = {key: [] for key in specs}
    for round_index in range(repeats):
        for key in (list(specs)[::-1] if round_index % 2 else list(specs)):
            records[key].append(run_worker(specs[key]))
    return records


# ---- the parent: prepare models, start workers, report -------------------------------------------
def wmt_figure(args, tmp):
    from td_fairseq.tools.compact import compact_checkpoint
    from td_fairseq.tools.ctranslate2_export import export_ctranslate2
    from td_fairseq.tools.inprocess import random_checkpoint, write_dictionaries
    write_dictionaries(tmp, args.vocab)
    dims = ["--encoder-layers", 6, "--decoder-layers", 6, "--encoder-embed-dim", 512, "--decoder-embed-dim", 512,
            "--encoder-ffn-embed-dim", 2048, "--decoder-ffn-embed-dim", 2048, "--encoder-attention-heads", 8,
            "--decoder-attention-heads", 8]
    dense = random_checkpoint(tmp, ["--td-type", "none", *dims], name="wmt_dense.pt")
    compact_checkpoint(dense, 0.5, os.path.join(tmp, "wmt_compact.pt"))
    specs, sizes = {}, {}
    for name, compute_type in [(n, c) for c in args.wmt_compute_types for n in ("dense", "compact")]:
        stored = "int8" if compute_type.startswith("int8") else "float32"
        out = os.path.join(tmp, f"ct2_wmt_{name}_{stored}")
        if not os.path.isdir(out):
            export_ctranslate2(os.path.join(tmp, f"wmt_{name}.pt"), tmp, out, stored)
        sizes[(name, compute_type)] = os.path.getsize(os.path.join(out, "model.bin"))
        specs[(name, compute_type)] = {
            "kind": "wmt", "label": f"WMT shape {name} {compute_type}", "model_dir": out, "compute_type": compute_type,
            "threads": args.threads, "beam": args.beam, "vocab": args.vocab, "src_len": args.src_len,
            "sentences": args.wmt_sentences, "out_len": args.out_len, "batch_tokens": args.wmt_batch_tokens}
    seconds = {key: statistics.median(next(iter(r["seconds"].values())) for r in records)
               for key, records in rounds(specs, args.repeats).items()}
    return [{"model": name, "compute_type": compute_type, "model_bytes": sizes[(name, compute_type)],
             "sentences_per_s": round(args.wmt_sentences / seconds[(name, compute_type)], 2),
             "speedup_vs_dense": round(seconds[("dense", compute_type)] / seconds[(name, compute_type)], 3)}
            for name, compute_type in specs]


def variants(args, tmp) -> dict:
    """{name: checkpoint}: the trained model, pruned 50 % unstructured, FFN units compacted."""
    from td_fairseq.tools.checkpoint import prune_checkpoint
    from td_fairseq.tools.compact import compact_checkpoint
    prune_checkpoint(args.checkpoint, [0.5], os.path.join(tmp, "pruned"))
    paths = {"dense": args.checkpoint, "pruned 50 % unstructured": os.path.join(tmp, "pruned", "sparsity_0.50.pt")}
    for level in args.compact_levels:
        paths[f"compact {level * 100:.0f} % FFN units"] = os.path.join(tmp, f"compact_{level:.2f}.pt")
        compact_checkpoint(args.checkpoint, level, paths[f"compact {level * 100:.0f} % FFN units"])
    return paths


TRAINED_COMPUTE_TYPES = ("float32", "int8_float32", "int8", "int8_bfloat16", "bfloat16")


def trained_specs(args, tmp) -> dict:
    """{(model, engine): worker spec}, the CTranslate2 models exported (the parent loads none)."""
    import ctranslate2

    from td_fairseq.tools.ctranslate2_export import export_ctranslate2
    supported = ctranslate2.get_supported_compute_types("cpu")
    compute_types = args.compute_types or [c for c in TRAINED_COMPUTE_TYPES if c in supported]
    common = {"kind": "trained", "data_bin": args.data_bin, "subset": args.subset, "beam": args.beam,
              "max_len_a": args.max_len_a, "max_len_b": args.max_len_b, "max_tokens": args.max_tokens,
              "spm": args.spm, "ref": args.ref, "threads": args.threads}
    specs = {}
    for name, path in variants(args, tmp).items():
        for dtype in ("fp32", "bf16"):
            specs[(name, f"fairseq {dtype}")] = dict(common, label=f"{name}, fairseq {dtype}", checkpoint=path,
                                                     dtype=dtype)
        for compute_type in compute_types:
            stored = "int8" if compute_type.startswith("int8") else "float32"  # loading converts to the compute type
            model_dir = os.path.join(tmp, f"ct2 {name} {stored}".replace(" ", "_").replace("%", "pc"))
            if not os.path.isdir(model_dir):
                export_ctranslate2(path, args.data_bin, model_dir, stored)
            specs[(name, f"CTranslate2 {compute_type}")] = dict(
                common, label=f"{name}, CTranslate2 {compute_type}", checkpoint=path, model_dir=model_dir,
                compute_type=compute_type, batchings=list(BATCHINGS))
    return specs


def real_figure(args, tmp):
    """Every (model, engine) timed in its own processes, rounds alternating, so the ratios across models hold too."""
    specs = trained_specs(args, tmp)
    best = {}
    for engine in [e for name, e in specs if name == "dense" and e.startswith("CTranslate2")]:
        # CTranslate2's batching tuned on the dense model, once per compute type (one process, one
        # translator, batchings interleaved), then used for every model
        tried = run_worker(dict(specs[("dense", engine)], passes=args.repeats))["seconds"]
        best[engine] = min(tried, key=tried.get)
        print(f"batching for {engine}: " + ", ".join(f"{b} {s:.3f} s" for b, s in tried.items()))
    for (name, engine), spec in specs.items():
        if engine in best:
            spec["batchings"] = [best[engine]]
    rows = []
    for (name, engine), records in rounds(specs, args.repeats).items():
        batching = best.get(engine, "fairseq batches")
        times = [r["seconds"][batching] for r in records]
        rows.append({"model": name, "engine": engine,
                     "batching": best.get(engine, f"max_tokens {args.max_tokens}"),
                     "sentences_per_s": round(records[0]["sentences"] / statistics.median(times), 2),
                     "bleu": records[0]["bleu"], "seconds": round(statistics.median(times), 3),
                     "round_seconds": [round(t, 3) for t in times]})
    base = {r["model"]: r["sentences_per_s"] for r in rows if r["engine"] == "fairseq fp32"}
    for r in rows:
        r["speed_vs_fairseq_fp32_same_model"] = round(r["sentences_per_s"] / base[r["model"]], 3)
        r["speed_vs_fairseq_fp32_dense"] = round(r["sentences_per_s"] / base["dense"], 3)
    return rows


def print_table(rows, columns):
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in columns) + " |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="a trained translation checkpoint of ours (figure 2)")
    p.add_argument("--data-bin", help="its data-bin")
    p.add_argument("--spm", help="sentencepiece model to detokenize with")
    p.add_argument("--ref", help="raw reference of the subset")
    p.add_argument("--subset", default="test")
    p.add_argument("--compact-levels", type=float, nargs="*", default=[0.25, 0.5, 0.75],
                   help="FFN fractions to remove (none: the dense and 50 %% pruned models only)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--max-len-a", type=float, default=1.2)
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=4000, help="fairseq's batches (and CTranslate2's first batching)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-wmt", action="store_true", help="no WMT-shape figure")
    p.add_argument("--vocab", type=int, default=32000, help="WMT shape: made-up dictionary size")
    p.add_argument("--src-len", type=int, default=25, help="WMT shape: source tokens per sentence")
    p.add_argument("--out-len", type=int, default=25, help="WMT shape: every output is forced to this length")
    p.add_argument("--wmt-sentences", type=int, default=64)
    p.add_argument("--wmt-batch-tokens", type=int, default=1024, help="WMT shape: CTranslate2 max_batch_size (tokens)")
    p.add_argument("--wmt-compute-types", nargs="+", default=["int8"], help="WMT shape: CTranslate2 compute types")
    p.add_argument("--compute-types", nargs="+", choices=TRAINED_COMPUTE_TYPES,
                   help="trained figure: CTranslate2 compute types (default: each of these the CPU supports)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if bool(args.checkpoint) != bool(args.data_bin):
        p.error("--checkpoint and --data-bin go together")
    if min(args.threads, args.repeats) < 1:
        p.error("--threads and --repeats must be at least 1")
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # fairseq's loading chatter; the tables are the output
    warnings.filterwarnings("ignore")
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cpu")
    unsupported = sorted(set(args.compute_types or ()) - supported)
    if unsupported:
        p.error(f"this CPU's CTranslate2 does not support --compute-types {' '.join(unsupported)}")
    from td_fairseq.results import git_commit, machine
    from td_fairseq.tools.translate import load_spm
    if args.spm:
        load_spm(args.spm)  # a bad --spm is one line now, not in the first worker after the exports
    result = {"command": "python benchmarks/serve_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": git_commit(), "machine": machine(), "torch": torch.__version__,
              "ctranslate2": ctranslate2.__version__, "threads": args.threads, "beam": args.beam,
              "ctranslate2_cpu_compute_types": sorted(supported),
              "isolation": "process", "repeats": args.repeats}
    print(f"{result['command']}\ncommit {result['commit']} | {result['machine']} | torch {result['torch']}, "
          f"ctranslate2 {result['ctranslate2']} ({', '.join(result['ctranslate2_cpu_compute_types'])}), "
          f"{args.threads} threads, beam {args.beam}, median of {args.repeats} rounds, each timing in a fresh "
          "process after a warm-up pass")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_wmt:
            result["wmt_shape"] = wmt_figure(args, tmp)
            print(f"\nWMT-base shape, random weights, vocab {args.vocab}: {args.wmt_sentences} sentences of "
                  f"{args.src_len} tokens, output forced to {args.out_len}, max_batch_size {args.wmt_batch_tokens} "
                  "tokens")
            print_table(result["wmt_shape"], ["model", "compute_type", "model_bytes", "sentences_per_s",
                                              "speedup_vs_dense"])
        if args.checkpoint:
            result["trained"] = real_figure(args, tmp)
            print(f"\n{args.checkpoint}, subset {args.subset}, length bound {args.max_len_a}*src+{args.max_len_b}")
            print_table(result["trained"], ["model", "engine", "batching", "sentences_per_s", "bleu",
                                            "speed_vs_fairseq_fp32_same_model", "speed_vs_fairseq_fp32_dense"])
    if args.json:
        from td_fairseq.files import write_json
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    from td_fairseq import cli
    sys.exit(cli.run(worker_main if sys.argv[1:2] == ["--worker"] else main))
