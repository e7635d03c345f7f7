"""The one table of sparsity options: targeted dropout, the baselines, the frozen mask.

Every consumer is made from ``OPTIONS``: the fairseq model's ``add_args`` and its hydra
dataclass (``models.transformer_td``), the vision scripts' parsers, the conversion to
``TDConfig`` / ``BaselineConfig`` and the list of keys dropped on export. Each value is
checked once, by its type at the argparse boundary; the configs check again for callers
that build them directly.
"""
import argparse
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from .baselines import L0_FORMS, METHODS as BASELINE_METHODS, BaselineConfig
from .patterns import parse_pattern, pattern_name
from .selection import parse_kinds
from .td import TD_TYPES, TDConfig

SPARSITY_METHODS = ("td",) + BASELINE_METHODS


def _number(parse, valid, expected):
    """An argparse type: ``parse(text)`` that must satisfy ``valid`` (NaN never does)."""
    def convert(text):
        try:
            value = parse(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    convert.__name__ = expected  # argparse names the type in its messages
    return convert


def _checked(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    return convert


UNIT_INTERVAL = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
NON_NEGATIVE_INT = _number(int, lambda v: v >= 0, "a non-negative integer")
POSITIVE_INT = _number(int, lambda v: v >= 1, "a positive integer")
NON_NEGATIVE = _number(float, lambda v: 0.0 <= v < math.inf, "a non-negative number")
POSITIVE = _number(float, lambda v: 0.0 < v < math.inf, "a positive number")
MOMENTUM = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
TARGETS = _checked(lambda text: ",".join(parse_kinds(text)))
PATTERN = _checked(lambda text: pattern_name(parse_pattern(text)))


@dataclass(frozen=True)
class Option:
    """One command-line option. ``field`` is its name in ``config`` ('td' or 'baseline')."""
    name: str
    default: Any
    help: str
    type: Optional[Callable] = None
    choices: Optional[tuple] = None
    metavar: Optional[str] = None
    group: str = "targeted dropout"
    config: Optional[str] = None
    field: Optional[str] = None
    flag: bool = False  # store_true

    @property
    def dest(self) -> str:
        return self.name

    @property
    def cli(self) -> str:
        return "--" + self.name.replace("_", "-")


_B = "sparsity baselines"
OPTIONS = (
    Option("td_type", "weight", "what is targeted (none disables TD)", choices=TD_TYPES, config="td",
           field="td_type"),
    Option("td_gamma", 0.75, "targeted fraction", UNIT_INTERVAL, metavar="G", config="td", field="gamma"),
    Option("td_alpha", 0.66, "drop probability of a targeted element", UNIT_INTERVAL, metavar="A", config="td",
           field="alpha"),
    Option("td_ramp_updates", 0, "ramp gamma and alpha over R and 2R updates (0: constant)", NON_NEGATIVE_INT,
           metavar="R", config="td", field="ramp_updates"),
    Option("td_targets", "attn,ffn", "comma list from attn,ffn,embed,output", TARGETS, metavar="LIST"),
    Option("td_eval_mask", False, "in eval mode remove the bottom-gamma set (validation of ramping TD)",
           flag=True, config="td", field="eval_mask"),
    Option("td_rescale", False, "training: divide the kept targeted weights by 1 - alpha_t (tensor2tensor's "
           "targeted_dropout); the paper's rule does not rescale", flag=True, config="td", field="rescale"),
    Option("td_eval_scale", False, "in eval mode multiply the bottom-gamma set by 1 - alpha_t, ordinary "
           "dropout's weight-scaling rule (export folds it into the weights)", flag=True, config="td",
           field="eval_scale"),
    Option("td_pattern", "unstructured", "weight TD only: N:M (e.g. 2:4) targets the M-N smallest |w| of each "
           "group of M consecutive inputs of a row instead of the bottom gamma (--td-gamma is then unused; a "
           "ramp scales alpha alone), so that the model is pruned to the pattern afterwards",
           PATTERN, metavar="N:M", config="td", field="pattern"),
    Option("td_mask_interval", 1, "select the targeted set every K updates and keep it in between (the drop "
           "stays fresh every step); 1 is the paper's rule", POSITIVE_INT, metavar="K", config="td",
           field="mask_interval"),
    Option("sparsity_method", "td", "td, or a baseline on the --td-targets weights", choices=SPARSITY_METHODS,
           group=_B),
    Option("drop_rate", None, "dropout/unit_dropout rate (default: td-gamma * td-alpha, the matching rate)",
           UNIT_INTERVAL, metavar="P", group=_B, config="baseline", field="drop_rate"),
    Option("l1_coef", 1e-5, "l1: coef * sum |w|", NON_NEGATIVE, metavar="C", group=_B, config="baseline",
           field="l1_coef"),
    Option("l0_coef", 1e-6, "l0: coef * expected open gates", NON_NEGATIVE, metavar="C", group=_B,
           config="baseline", field="l0_coef"),
    Option("l0_form", "weight", "l0: one gate per weight or per unit (row)", choices=L0_FORMS, group=_B,
           config="baseline", field="l0_form"),
    Option("vd_coef", 1e-6, "variational: coef * KL", NON_NEGATIVE, metavar="C", group=_B, config="baseline",
           field="vd_coef"),
    Option("gmp_sparsity", 0.9, "gmp: final sparsity", UNIT_INTERVAL, metavar="S", group=_B, config="baseline",
           field="gmp_sparsity"),
    Option("gmp_start", 0, "gmp: first mask update", NON_NEGATIVE_INT, metavar="T0", group=_B,
           config="baseline", field="gmp_start"),
    Option("gmp_steps", 100, "gmp: number of mask updates", POSITIVE_INT, metavar="N", group=_B,
           config="baseline", field="gmp_steps"),
    Option("gmp_interval", 100, "gmp: updates between masks", POSITIVE_INT, metavar="DT", group=_B,
           config="baseline", field="gmp_interval"),
    Option("smallify_coef", 1e-4, "smallify: coef * sum |switch|", NON_NEGATIVE, metavar="C", group=_B,
           config="baseline", field="smallify_coef"),
    Option("smallify_momentum", 0.9, "smallify: momentum of the switch-sign mean and variance", MOMENTUM,
           metavar="M", group=_B, config="baseline", field="smallify_momentum"),
    Option("smallify_threshold", 0.5, "smallify: remove a unit once its switch-sign variance exceeds T",
           POSITIVE, metavar="T", group=_B, config="baseline", field="smallify_threshold"),
    Option("freeze_mask", False, "hold every zero weight of the --td-targets at zero while training: fine-tune "
           "a pruned model (--finetune-from-model PRUNED.pt); needs --td-type none and --sparsity-method td",
           flag=True, group="pruned fine-tuning"),
)
BY_NAME = {o.name: o for o in OPTIONS}
DEFAULTS = {o.name: o.default for o in OPTIONS}


def add_arguments(parser, arch_defaults: bool = False, skip=()) -> None:
    """Add every option to ``parser``, grouped. ``arch_defaults``: defaults are None so a
    fairseq named architecture can set its own (``fill_defaults`` then applies the table's);
    otherwise the table's defaults, shown in ``--help``."""
    groups = {}
    for o in OPTIONS:
        if o.name in skip:
            continue
        if o.group not in groups:  # fairseq hands add_args a group already: groups do not nest
            nested = isinstance(parser, argparse._ArgumentGroup)
            groups[o.group] = parser if nested else parser.add_argument_group(o.group)
        group = groups[o.group]
        default = None if arch_defaults else o.default
        # argparse shows its own default; with arch defaults the table's is the one that applies
        shown = f" (default: {o.default})" if arch_defaults and o.default is not None else ""
        if o.flag:
            group.add_argument(o.cli, action="store_true", default=default, help=o.help + shown)
        else:
            group.add_argument(o.cli, type=o.type, choices=o.choices, metavar=o.metavar, default=default,
                               help=o.help + shown)


def fill_defaults(args) -> None:
    """Set every option that is missing or None on ``args`` to the table's default."""
    for name, default in DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, default)


def td_config(args) -> TDConfig:
    values = {o.field: getattr(args, o.name, o.default) for o in OPTIONS if o.config == "td"}
    for o in OPTIONS:
        if o.config == "td" and o.flag:
            values[o.field] = bool(values[o.field])
    return TDConfig(**values)


def baseline_config(args) -> Optional[BaselineConfig]:
    """The baseline ``args`` select (None for td). Its options are checked even under td,
    so that a bad value never waits for the day the method is switched."""
    values = {o.field: getattr(args, o.name, o.default) for o in OPTIONS if o.config == "baseline"}
    if values["drop_rate"] is None:  # the matching rate of the TD setting
        values["drop_rate"] = getattr(args, "td_gamma", DEFAULTS["td_gamma"]) * getattr(
            args, "td_alpha", DEFAULTS["td_alpha"])
    checked = BaselineConfig(method=BASELINE_METHODS[0], **values)
    method = getattr(args, "sparsity_method", "td") or "td"
    return None if method == "td" else replace(checked, method=method)


def check_combination(args) -> None:
    """Options that cannot go together: one view per weight."""
    if getattr(args, "freeze_mask", False) and (
            getattr(args, "sparsity_method", "td") != "td" or getattr(args, "td_type", "none") != "none"):
        raise ValueError("--freeze-mask holds a pruned model's zeros and cannot be combined with targeted dropout "
                         "or a baseline: use --td-type none --sparsity-method td")
    if getattr(args, "td_eval_mask", False) and getattr(args, "td_eval_scale", False):
        raise ValueError("--td-eval-mask removes the targeted set that --td-eval-scale scales: give one of them")


def option_keys() -> tuple:
    """Every option's name: the model-config keys an exported stock checkpoint drops."""
    return tuple(DEFAULTS)
