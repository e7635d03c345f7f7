"""Serving speed: fairseq (fp32, bf16) against CTranslate2 (float32, int8, ...), dense, pruned and compact.

Two figures, each a set of ratios measured in one run (models timed in turn, repeatedly, medians
kept, so machine noise hits all alike):

1. WMT-base shape (6+6 layers, dim 512, FFN 2048, 8 heads; random weights, a made-up dictionary):
   CTranslate2 int8, dense against FFN units compacted by 50 %. Every output is forced to the same
   length (min = max decoding length), so both decode the same number of steps.
2. With --checkpoint/--data-bin (a trained model): sentences per second on the subset and BLEU, for
   the dense model, 50 % unstructured magnitude pruning (prune_checkpoint.py) and FFN units compacted
   by 25/50/75 % (compact_checkpoint.py), each in fairseq fp32, fairseq bf16 (torch.autocast, as the
   sweep's --bf16 decode) and CTranslate2 in every compute type this CPU has. CTranslate2's batching
   is tuned first on the dense model (fairseq's batches, or one call rebatched by tokens).

    python benchmarks/serve_speed.py [--checkpoint CKPT --data-bin BIN [--spm SPM] [--ref REF]]
        [--threads 2] [--beam 4] [--repeats 3] [--skip-wmt] [--json OUT.json]
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import replace

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


def wmt_figure(args, tmp):
    from td_fairseq.tools.compact import compact_checkpoint
    from td_fairseq.tools.ctranslate2_export import export_ctranslate2
    from td_fairseq.tools.ctranslate2_translate import load_translator
    from td_fairseq.tools.inprocess import random_checkpoint, write_dictionaries
    write_dictionaries(tmp, args.vocab)
    dims = ["--encoder-layers", 6, "--decoder-layers", 6, "--encoder-embed-dim", 512, "--decoder-embed-dim", 512,
            "--encoder-ffn-embed-dim", 2048, "--decoder-ffn-embed-dim", 2048, "--encoder-attention-heads", 8,
            "--decoder-attention-heads", 8]
    dense = random_checkpoint(tmp, ["--td-type", "none", *dims], name="wmt_dense.pt")
    compact_checkpoint(dense, 0.5, os.path.join(tmp, "wmt_compact.pt"))
    g = torch.Generator().manual_seed(0)
    sources = [[f"w{int(i)}" for i in torch.randint(0, args.vocab, (args.src_len,), generator=g)]
               for _ in range(args.wmt_sentences)]
    runs, sizes = {}, {}
    for name, compute_type in [(n, c) for c in args.wmt_compute_types for n in ("dense", "compact")]:
        stored = "int8" if compute_type.startswith("int8") else "float32"
        out = os.path.join(tmp, f"ct2_wmt_{name}_{stored}")
        if not os.path.isdir(out):
            export_ctranslate2(os.path.join(tmp, f"wmt_{name}.pt"), tmp, out, stored)
        sizes[(name, compute_type)] = os.path.getsize(os.path.join(out, "model.bin"))
        translator = load_translator(out, compute_type=compute_type, threads=args.threads)

        def run(translator=translator):
            start = time.perf_counter()
            translator.translate_batch(sources, beam_size=args.beam, max_decoding_length=args.out_len,
                                       min_decoding_length=args.out_len, max_batch_size=args.wmt_batch_tokens,
                                       batch_type="tokens")
            return time.perf_counter() - start
        runs[(name, compute_type)] = run
    seconds = medians(runs, args.repeats)
    return [{"model": name, "compute_type": compute_type, "model_bytes": sizes[(name, compute_type)],
             "sentences_per_s": round(args.wmt_sentences / seconds[(name, compute_type)], 2),
             "speedup_vs_dense": round(seconds[("dense", compute_type)] / seconds[(name, compute_type)], 3)}
            for name, compute_type in runs]


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


def engines(args, path, tmp, name):
    """{engine: (() -> (hyps, refs, seconds) for batching b)} for one checkpoint."""
    import ctranslate2

    from td_fairseq.tools.ctranslate2_export import export_ctranslate2
    from td_fairseq.tools.ctranslate2_translate import load_translator, translate_ct2
    from td_fairseq.tools.loading import load_translation_model
    from td_fairseq.tools.translate import DecodeConfig, load_subset, translate
    decode = DecodeConfig(args.subset, args.beam, 1.0, args.max_len_a, args.max_len_b)
    model, task, _ = load_translation_model(path, args.data_bin)
    load_subset(task, args.data_bin, args.subset)

    def fairseq(dtype):  # bf16: the sweep's --bf16 decode (torch.autocast around generation)
        return lambda batching=None: translate(model, task, replace(decode, dtype=dtype), args.max_tokens,
                                               args.spm_model)
    out = {"fairseq fp32": fairseq("fp32"), "fairseq bf16": fairseq("bf16")}
    supported = ctranslate2.get_supported_compute_types("cpu")
    for compute_type in [c for c in ("float32", "int8_float32", "int8", "int8_bfloat16", "bfloat16") if c in supported]:
        stored = "int8" if compute_type.startswith("int8") else "float32"  # loading converts to the compute type
        model_dir = os.path.join(tmp, f"ct2 {name} {stored}".replace(" ", "_").replace("%", "pc"))
        if not os.path.isdir(model_dir):
            export_ctranslate2(path, args.data_bin, model_dir, stored)
        translator = load_translator(model_dir, compute_type=compute_type, threads=args.threads)

        def run(batching, translator=translator):
            max_tokens, size, kind = BATCHINGS[batching]
            return translate_ct2(translator, task, decode, max_tokens or args.max_tokens, args.spm_model,
                                 model.max_decoder_positions(), size, kind)
        out[f"CTranslate2 {compute_type}"] = run
    return out


def real_figure(args, tmp):
    """Every (model, engine) timed in one interleaved loop, so the ratios across models hold too."""
    from td_fairseq.tools.translate import bleu_chrf, read_reference
    runs = {(name, engine): run for name, path in variants(args, tmp).items()
            for engine, run in engines(args, path, tmp, name).items()}
    best = {}
    for engine in [e for name, e in runs if name == "dense" and e.startswith("CTranslate2")]:
        # CTranslate2's batching tuned on the dense model, once per compute type, used for every model
        tried = medians({b: (lambda b=b: runs[("dense", engine)](b)[2]) for b in BATCHINGS}, args.repeats)
        best[engine] = min(tried, key=tried.get)
        print(f"batching for {engine}: " + ", ".join(f"{b} {s:.3f} s" for b, s in tried.items()))
    outputs = {}
    seconds = medians({key: (lambda key=key: _keep(outputs, key, runs[key](best.get(key[1])))) for key in runs},
                      args.repeats)
    references, rows = None, []
    for (name, engine) in runs:
        hyps, refs = outputs[(name, engine)]
        if references is None:
            references = read_reference(args.ref, len(refs)) if args.ref else refs
        rows.append({"model": name, "engine": engine, "batching": best.get(engine, f"max_tokens {args.max_tokens}"),
                     "sentences_per_s": round(len(hyps) / seconds[(name, engine)], 2),
                     "bleu": round(bleu_chrf(hyps, references)[0], 2), "seconds": round(seconds[(name, engine)], 3)})
    base = {r["model"]: r["sentences_per_s"] for r in rows if r["engine"] == "fairseq fp32"}
    for r in rows:
        r["speed_vs_fairseq_fp32_same_model"] = round(r["sentences_per_s"] / base[r["model"]], 3)
        r["speed_vs_fairseq_fp32_dense"] = round(r["sentences_per_s"] / base["dense"], 3)
    return rows


def _keep(outputs, key, result):
    outputs[key] = result[:2]
    return result[2]


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
    p.add_argument("--compact-levels", type=float, nargs="+", default=[0.25, 0.5, 0.75])
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
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if bool(args.checkpoint) != bool(args.data_bin):
        p.error("--checkpoint and --data-bin go together")
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # fairseq's loading chatter; the tables are the output
    warnings.filterwarnings("ignore")
    import ctranslate2

    from td_fairseq.results import git_commit, machine
    from td_fairseq.tools.translate import load_spm
    args.spm_model = load_spm(args.spm) if args.spm else None
    result = {"command": "python benchmarks/serve_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": git_commit(), "machine": machine(), "torch": torch.__version__,
              "ctranslate2": ctranslate2.__version__, "threads": args.threads, "beam": args.beam,
              "ctranslate2_cpu_compute_types": sorted(ctranslate2.get_supported_compute_types("cpu"))}
    print(f"{result['command']}\ncommit {result['commit']} | {result['machine']} | torch {result['torch']}, "
          f"ctranslate2 {result['ctranslate2']} ({', '.join(result['ctranslate2_cpu_compute_types'])}), "
          f"{args.threads} threads, beam {args.beam}, median of {args.repeats} interleaved runs after a warm-up")
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
    main()
