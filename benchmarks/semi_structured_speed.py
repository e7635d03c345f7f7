"""Dense bf16 against 2:4 semi-structured bf16: forward throughput, beam decoding, identical output.

A randomly initialised transformer_td_wmt_en_de-size model (6+6 layers, dim 512, FFN 2048, 8 heads)
on a made-up dictionary, its attention and FFN weights pruned to 2:4 by magnitude (trained weights
do not change the work), saved as a stock checkpoint and loaded three ways with
``td_fairseq.load_for_inference``: dense (fairseq's attention fast path, what a user runs today),
dense twin (the same weights through the projection modules, the path the sparse model takes) and
semi-structured sparse (one per backend asked for). Measured in the same run, models in turn,
order alternating, medians of the repeats:
  - encoder and decoder forward, teacher-forced, batches of 64 and 256 sentences of 30 tokens;
  - beam-4 decoding of 500 sentences, every output forced to 30 tokens (equal work);
  - identical output: natural beam decoding of the sparse model against its dense twin in the same
    dtype, and the largest logit difference on one teacher-forced batch.
Goals: sparse / dense >= 1.3 forward, >= 1.15 decode at batch 64.

    python benchmarks/semi_structured_speed.py --device cuda [--backend cusparselt cutlass] [--json OUT]
    python benchmarks/semi_structured_speed.py --smoke            # tiny, on the CPU: dense fallback, ratio ~1
"""
import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIZES = {"wmt": dict(arch="transformer_td_wmt_en_de", dims=[], vocab=32000),
         "tiny": dict(arch="transformer_td", vocab=100, dims=[
             "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "64", "--decoder-embed-dim",
             "64", "--encoder-ffn-embed-dim", "128", "--decoder-ffn-embed-dim", "128",
             "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"])}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        fn()
    sync(device)
    return time.perf_counter() - start


def two_four(state):
    from td_fairseq.sparsity.patterns import nm_mask
    from td_fairseq.sparsity.selection import is_weight_matrix_key
    return {k: v.masked_fill(nm_mask(v.abs(), (2, 4)), 0) if is_weight_matrix_key(k, v) else v
            for k, v in state.items()}


def load_models(path, data, args):
    """{name: model}, task and the conversion reports, all from one checkpoint."""
    from td_fairseq import load_for_inference
    from td_fairseq.tools.semi_structured import disable_attention_fast_path
    dtype = DTYPES[args.dtype]
    dense, task, _ = load_for_inference(path, dtype=dtype, device=args.device, data_bin=data)
    twin, _, _ = load_for_inference(path, dtype=dtype, device=args.device, data_bin=data)
    disable_attention_fast_path(twin)
    models, reports = {"dense": dense, "dense_twin": twin}, {}
    for name in args.backend:
        torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = name == "cutlass"
        models[f"sparse_{name}"], _, reports[name] = load_for_inference(
            path, semi_structured=True, dtype=dtype, device=args.device, data_bin=data, log=lambda line: None)
    torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = False
    return models, task, reports


def teacher_forced(vocab, batch, length, device):
    from td_fairseq.tools.inprocess import sample
    s = sample(vocab, batch, length, length, seed=batch, device=device)["net_input"]
    return s["src_tokens"], s["src_lengths"], s["prev_output_tokens"]


def forward_times(models, vocab, args):
    """{(part, batch): {name: median seconds}}, encoder and teacher-forced decoder apart."""
    rows = {}
    for batch in args.batches:
        src, lengths, prev = teacher_forced(vocab, batch, args.length, args.device)
        with torch.no_grad():
            encoded = {name: m.encoder(src, src_lengths=lengths) for name, m in models.items()}
        parts = {"encoder": lambda m, n: m.encoder(src, src_lengths=lengths),
                 "decoder": lambda m, n: m.decoder(prev, encoder_out=encoded[n])}
        for part, run in parts.items():
            times = {name: [] for name in models}
            for repeat in range(args.repeats + 1):
                for name in (list(models) if repeat % 2 else list(models)[::-1]):
                    seconds = timed(lambda: run(models[name], name), args.device)
                    if repeat:
                        times[name].append(seconds)
            rows[(part, batch)] = {name: statistics.median(ts) for name, ts in times.items()}
    return rows


def decode(model, task, samples, beam, out_len=None):
    """(hypotheses as token lists, output tokens); ``out_len`` forces every output to that length."""
    from fairseq.dataclass.configs import GenerationConfig
    forced = dict(max_len_a=0, max_len_b=out_len, min_len=out_len) if out_len else dict(max_len_a=1.2, max_len_b=10)
    generator = task.build_generator([model], GenerationConfig(beam=beam, **forced))
    hyps = []
    for s in samples:
        hyps += [h[0]["tokens"].tolist() for h in task.inference_step(generator, [model], s)]
    return hyps, sum(len(h) for h in hyps)


def decode_times(models, task, args):
    from td_fairseq.tools.inprocess import source_batches
    samples = source_batches(task.source_dictionary, args.decode_sentences, args.decode_batch, args.length,
                             device=args.device)
    times, tokens = {name: [] for name in models}, {}
    for repeat in range(args.decode_repeats + 1):  # pass 0 warms up and is not kept
        for name in (list(models) if repeat % 2 else list(models)[::-1]):
            sync(args.device)
            start = time.perf_counter()
            with torch.no_grad():
                tokens[name] = decode(models[name], task, samples, args.beam, args.length)[1]
            sync(args.device)
            if repeat:
                times[name].append(time.perf_counter() - start)
    return {name: {"seconds": statistics.median(ts), "tokens_per_second": tokens[name] / statistics.median(ts)}
            for name, ts in times.items()}


def identical_output(models, task, args):
    """Per sparse model: share of sentences decoded identically to the dense twin, and the largest
    absolute logit difference on one teacher-forced batch."""
    from td_fairseq.tools.inprocess import source_batches
    samples = source_batches(task.source_dictionary, args.check_sentences, args.decode_batch, args.length, seed=7,
                             device=args.device)
    with torch.no_grad():
        reference = decode(models["dense_twin"], task, samples, args.beam)[0]
        src, lengths, prev = teacher_forced(task.source_dictionary, 8, args.length, args.device)
        logits = models["dense_twin"](src, lengths, prev)[0].float()
        out = {}
        for name in (n for n in models if n.startswith("sparse")):
            hyps = decode(models[name], task, samples, args.beam)[0]
            diff = (models[name](src, lengths, prev)[0].float() - logits).abs().max().item()
            out[name] = {"identical": sum(a == b for a, b in zip(hyps, reference)) / len(reference),
                         "sentences": len(reference), "max_logit_difference": diff}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="wmt")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--backend", nargs="+", choices=["cusparselt", "cutlass"], default=["cusparselt"])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="sentences per forward batch")
    p.add_argument("--length", type=int, default=30, help="tokens per sentence (and per forced output)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--decode-sentences", type=int, default=500)
    p.add_argument("--decode-batch", type=int, default=64)
    p.add_argument("--decode-repeats", type=int, default=3)
    p.add_argument("--check-sentences", type=int, default=200)
    p.add_argument("--smoke", action="store_true", help="tiny model, CPU, few sentences: tests the script")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.smoke:
        args.size, args.device, args.batches, args.length, args.repeats = "tiny", "cpu", [4, 8], 8, 2
        args.decode_sentences, args.decode_batch, args.decode_repeats, args.check_sentences = 16, 8, 1, 8
    logging.disable(logging.INFO)  # fairseq's loading chatter; the table is the output
    warnings.filterwarnings("ignore")
    from td_fairseq.results import git_commit, machine
    from td_fairseq.tools.inprocess import random_checkpoint, write_dictionaries
    size = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        write_dictionaries(tmp, size["vocab"])
        path = random_checkpoint(tmp, ["--td-type", "none", *size["dims"]], arch=size["arch"], edit=two_four)
        models, task, reports = load_models(path, tmp, args)
    shapes = sorted({tuple(m.weight.shape) for n, m in models["dense"].named_modules()
                     if n.endswith(("_proj", "fc1", "fc2")) and "output_projection" not in n})
    result = {"command": "python benchmarks/semi_structured_speed.py " + " ".join(argv or sys.argv[1:]),
              "commit": git_commit(), "machine": machine(), "torch": torch.__version__, "size": args.size,
              "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else None,
              "dtype": args.dtype, "linear_shapes": shapes, "conversion": {k: {"notice": r["notice"],
                                                                             "converted": len(r["converted"])}
                                                                         for k, r in reports.items()}}
    forward = forward_times(models, task.source_dictionary, args)
    result["forward"] = [{"part": part, "batch": batch, "seconds": t,
                          **{f"{n}/dense": t["dense"] / t[n] for n in t if n != "dense"}}
                         for (part, batch), t in forward.items()]
    result["decode"] = decode_times(models, task, args)
    result["identical"] = identical_output(models, task, args)
    print(f"commit {result['commit']} | {result['machine']} | {result['gpu'] or 'cpu'} | torch {torch.__version__}")
    print(f"{args.size}: linear shapes {shapes}, {args.dtype}")
    for notice in result["conversion"].values():
        print("  " + notice["notice"])
    print("| part | batch | " + " | ".join(f"{n} ms" for n in models) + " | speed-up (dense time / time) |")
    for row in result["forward"]:
        speed = ", ".join(f"{k.split('/')[0]} {v:.2f}" for k, v in row.items() if k.endswith("/dense"))
        print(f"| {row['part']} | {row['batch']} | " + " | ".join(f"{row['seconds'][n] * 1e3:.2f}" for n in models)
              + f" | {speed} |")
    dense_decode = result["decode"]["dense"]["seconds"]
    for name, row in result["decode"].items():
        print(f"decode beam {args.beam}, {args.decode_sentences} sentences, batch {args.decode_batch}: {name} "
              f"{row['tokens_per_second']:.0f} tok/s, speed-up {dense_decode / row['seconds']:.2f}")
    for name, row in result["identical"].items():
        print(f"{name} vs dense twin: {row['identical'] * 100:.1f} % of {row['sentences']} sentences identical, "
              f"max logit difference {row['max_logit_difference']:.3g}")
    if args.json:
        from td_fairseq.files import write_json
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
