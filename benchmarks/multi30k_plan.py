"""The Multi30k study's plan, as data and pure functions (no torch, no fairseq).

What every model is trained with, which coefficient each method gets tuned over, at which
pruning level it is judged, in what order the work runs when time is short, how a recipe and
a coefficient are chosen on val, and how fairseq's training log is read. The driver
(``multi30k_study.py``) and the report (``multi30k_report.py``) import it; tests check it on
fixed numbers.
"""
import math
import re
import statistics
from dataclasses import dataclass
from typing import Optional

MODELS = {  # the small model is the one of docs/RESULTS.md section 6; tiny is for tests
    "small": ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "256",
              "--decoder-embed-dim", "256", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
              "--encoder-attention-heads", "4", "--decoder-attention-heads", "4"],
    "tiny": ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
             "--decoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
             "--encoder-attention-heads", "2", "--decoder-attention-heads", "2"],
}
COMMON = ["--user-dir", "td_fairseq", "--task", "translation", "--arch", "transformer_td", "--share-all-embeddings",
          "--dropout", "0.3", "--criterion", "label_smoothed_cross_entropy_td", "--label-smoothing", "0.1",
          "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr-scheduler", "inverse_sqrt",
          "--num-workers", "0", "--log-format", "simple", "--no-epoch-checkpoints",
          # save once, at the end; validate at fixed update intervals (the curves), not per epoch
          "--save-interval", "1000000", "--validate-interval", "1000000"]
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"]}
VALID_POINTS = 12  # validations per run: the points of the validation-loss curves

# Priority classes, run in this order and dropped from the end when the budget is short.
PROBE, RECIPE, CORE, CORE_SEEDS, BASELINES, ALTERNATIVES = range(6)
STUDY_CLASSES = list(range(RECIPE, ALTERNATIVES + 1))  # all but the probe, which always runs
CLASS_NAMES = {PROBE: "probe", RECIPE: "recipe", CORE: "TD-study models and gmp",
               CORE_SEEDS: "their extra seeds", BASELINES: "other baselines", ALTERNATIVES: "pruners, 2:4, fine-tune"}


@dataclass(frozen=True)
class Tuning:
    """One coefficient, a grid over it, and where it is judged: val BLEU at ``level``
    (``mode`` pruning ranked by ``score``), the level the method is reported at."""
    name: str
    values: tuple
    level: float
    mode: str = "weight"
    score: str = "magnitude"


@dataclass(frozen=True)
class Method:
    flags: tuple
    klass: int
    seeded: bool = False
    tuning: Optional[Tuning] = None
    sweeps: tuple = ("weight",)  # weight, unit (whole rows), own (the method's own score)


TD_75_66 = ("--td-type", "weight", "--td-gamma", "0.75", "--td-alpha", "0.66")
METHODS = {  # in priority order within a class
    "no_td": Method(("--td-type", "none"), CORE, True, sweeps=("weight", "unit")),
    "td": Method(TD_75_66, CORE, True),
    "ramping_td_90": Method(("--td-type", "weight", "--td-gamma", "0.90", "--td-alpha", "0.99", "--td-eval-mask"),
                            CORE, True, Tuning("ramp", (0.15, 0.3, 0.45), 0.9)),
    "ramping_td_95": Method(("--td-type", "weight", "--td-gamma", "0.95", "--td-alpha", "0.99", "--td-eval-mask"),
                            CORE, True, Tuning("ramp", (0.15, 0.3, 0.45), 0.95)),
    "unit_td": Method(("--td-type", "unit", "--td-gamma", "0.5", "--td-alpha", "0.5"), CORE, True,
                      sweeps=("weight", "unit")),
    "gmp": Method(("--td-type", "none", "--sparsity-method", "gmp", "--gmp-sparsity", "0.9"), CORE, True,
                  Tuning("end", (0.5, 0.7, 0.9), 0.9)),
    "random_td": Method(("--td-type", "weight_random", "--td-gamma", "0.75", "--td-alpha", "0.66"), BASELINES),
    "dropout": Method(("--td-type", "none", "--sparsity-method", "dropout"), BASELINES,
                      tuning=Tuning("drop-rate", (0.1, 0.25, 0.5), 0.8)),
    "unit_dropout": Method(("--td-type", "none", "--sparsity-method", "unit_dropout"), BASELINES,
                           tuning=Tuning("drop-rate", (0.1, 0.25, 0.5), 0.5, "unit"), sweeps=("weight", "unit")),
    "l1": Method(("--td-type", "none", "--sparsity-method", "l1"), BASELINES,
                 tuning=Tuning("l1-coef", (1e-6, 1e-5, 1e-4), 0.8)),
    "l0": Method(("--td-type", "none", "--sparsity-method", "l0", "--l0-form", "weight"), BASELINES,
                 tuning=Tuning("l0-coef", (1e-7, 1e-6, 1e-5), 0.8), sweeps=("weight", "own")),
    "variational": Method(("--td-type", "none", "--sparsity-method", "variational"), BASELINES,
                          tuning=Tuning("vd-coef", (1e-7, 1e-6, 1e-5), 0.8), sweeps=("weight", "own")),
    "smallify": Method(("--td-type", "none", "--sparsity-method", "smallify"), BASELINES,
                       tuning=Tuning("smallify-coef", (1e-5, 1e-4, 1e-3), 0.5, "unit", "own"),
                       sweeps=("weight", "unit")),
}
FIVE = ["no_td", "td", "ramping_td_90", "ramping_td_95", "unit_td"]
GMP_START, GMP_STEPS = 0.2, 10  # gmp's first mask update (fraction of the run) and number of mask updates
TIE_BLEU = 0.5  # val BLEU differences at the tuning level below this are ties, broken by dense val BLEU

# The alternatives of issue 13/14: (name, pruner, pattern). Magnitude unstructured is the main sweep.
PRUNERS = [("wanda", "wanda", None), ("sparsegpt", "sparsegpt", None), ("2:4", "magnitude", "2:4"),
           ("2:4 wanda", "wanda", "2:4"), ("2:4 sparsegpt", "sparsegpt", "2:4")]
FINETUNE_LEVELS = (0.8, 0.9)
TD_2_4 = ("--td-type", "weight", "--td-pattern", "2:4", "--td-gamma", "0.5", "--td-alpha", "0.66")


def value_name(value) -> str:
    return f"{value:g}"


def tuning_flags(label: str, value: float, updates: int) -> list:
    """The flags one grid value sets. Ramp and GMP end are fractions of the run."""
    name = METHODS[label].tuning.name
    if name == "ramp":
        return ["--td-ramp-updates", str(max(1, round(value * updates)))]
    if name == "end":
        start = round(GMP_START * updates)
        interval = max(1, round((value * updates - start) / GMP_STEPS))
        return ["--gmp-start", str(start), "--gmp-interval", str(interval), "--gmp-steps", str(GMP_STEPS)]
    return ["--" + name, value_name(value)]


@dataclass(frozen=True)
class Recipe:
    """What every model shares: peak lr, warm-up as a fraction of the updates, batch."""
    lr: float
    warmup: float
    max_tokens: int

    @property
    def key(self) -> str:
        return f"lr{value_name(self.lr)}_w{value_name(self.warmup)}"

    def flags(self, updates: int) -> list:
        return ["--lr", value_name(self.lr), "--warmup-updates", str(max(1, round(self.warmup * updates))),
                "--max-tokens", str(self.max_tokens), "--max-update", str(updates),
                "--validate-interval-updates", str(max(1, updates // VALID_POINTS)),
                "--log-interval", str(max(1, min(50, updates // 20)))]


def recipe_grid(lrs, warmups, max_tokens) -> list:
    for warmup in warmups:
        if not 0 < warmup <= 0.1:
            raise ValueError(f"warm-up must be a fraction in (0, 0.1] of the updates, got {warmup}")
    return [Recipe(lr, warmup, max_tokens) for lr in lrs for warmup in warmups]


def choose_recipe(final_losses: dict) -> Optional[str]:
    """Decision rule for the recipe: the lowest final validation loss of no_td (None if no run
    produced one). ``final_losses``: recipe key -> loss or None."""
    scored = [(loss, key) for key, loss in final_losses.items() if loss is not None and math.isfinite(loss)]
    return min(scored)[1] if scored else None


def choose_value(results: dict) -> Optional[float]:
    """Decision rule for a coefficient: the highest val BLEU at the tuning level; values within
    TIE_BLEU of the best are ties, broken by dense val BLEU, then by grid order.
    ``results``: value -> (BLEU at the level, dense BLEU), either None when not measured."""
    measured = [(v, at, dense) for v, (at, dense) in results.items() if at is not None]
    if not measured:
        return None
    best = max(at for _, at, _ in measured)
    tied = [(v, dense if dense is not None else -1.0) for v, at, dense in measured if at >= best - TIE_BLEU]
    return max(tied, key=lambda item: item[1])[0]  # max keeps the first of equal items: grid order


# fairseq's training log (--log-format simple)
_VALID = re.compile(r"valid on 'valid' subset \| loss ([0-9.]+|nan|inf) .*?\| num_updates (\d+)")
_UPS = re.compile(r"\| train_inner \| epoch \d+:\s+\d+ / (\d+) .*?ups=([0-9.]+).*?num_updates=(\d+)")


def valid_curve(log: str) -> list:
    """[(update, validation loss)] in log order (base 2, label smoothed: fairseq's 'loss')."""
    return [(int(u), float(loss)) for loss, u in _VALID.findall(log)]


def final_valid_loss(log: str) -> Optional[float]:
    curve = valid_curve(log)
    return curve[-1][1] if curve else None


def train_speed(log: str) -> Optional[float]:
    """Median updates per second over the logged intervals, the first (warm-up) one left out."""
    ups = [float(u) for _, u, _ in _UPS.findall(log)]
    ups = ups[1:] if len(ups) > 1 else ups
    return statistics.median(ups) if ups else None


def batches_per_epoch(log: str) -> Optional[int]:
    found = _UPS.findall(log)
    return int(found[0][0]) if found else None


def updates_done(log: str) -> int:
    found = re.findall(r"num_updates[ =](\d+)", log)
    return int(found[-1]) if found else 0


def stopped_by_time(log: str) -> bool:
    return "Stopping training due to cumulative_training_time" in log


def solve_updates(makespan, usable_seconds: float, low: int, high: int) -> int:
    """The most updates per model in [1, high] whose simulated makespan fits in
    ``usable_seconds`` (0 if even one update does not fit). ``makespan(updates)`` must grow
    with the updates; ``low`` is only where the search starts looking."""
    if makespan(1) > usable_seconds:
        return 0
    lo, hi = 1, max(1, high)
    if makespan(hi) <= usable_seconds:
        return hi
    guess = min(max(low, 1), hi)
    if makespan(guess) <= usable_seconds:
        lo = guess
    else:
        hi = guess
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if makespan(mid) <= usable_seconds else (lo, mid)
    return lo


def choose_sizing(makespan, usable_seconds: float, min_updates: int, max_updates: int, classes: list):
    """(updates, classes included) for this run. Every class in ``classes`` (priority order)
    if the largest update count that fits is at least ``min_updates``; otherwise drop classes
    from the end, keeping at least the first two past the probe (the recipe and the core), and
    then run them at ``min_updates`` even if the deadline will cut their tail.
    ``makespan(updates, included)``: simulated seconds."""
    for keep in range(len(classes), 1, -1):
        included = classes[:keep]
        updates = solve_updates(lambda u: makespan(u, included), usable_seconds, min_updates, max_updates)
        if updates >= min_updates:
            return updates, included
    return min_updates, classes[:2]
