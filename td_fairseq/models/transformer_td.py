"""fairseq adapter: ``transformer_td``, a stock Transformer with TD attached after build.

Nothing of fairseq's Transformer is copied: the model is built by the parent class, then
the core's ``apply_targeted_dropout`` routes every selected ``.weight`` through a
controller. State-dict keys stay those of the stock model (random-targeted types add one
``td.random_score`` buffer per targeted module). ``--sparsity-method`` other than td
attaches one of the core's baseline views instead (``sparsity/baselines.py``) the same
way; L0 adds ``td.log_alpha``, variational ``td.log_sigma2``, GMP ``td.mask`` and
``td.mask_step``, Smallify ``td.switch``, ``td.pruned``, ``td.sign_mean`` and
``td.sign_var``, all folded into plain weights by ``tools.checkpoint.stock_checkpoint``.
"""
import argparse
import math

from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    base_architecture, tiny_architecture, transformer_iwslt_de_en, transformer_vaswani_wmt_en_de_big,
    transformer_wmt_en_de)

from ..sparsity import TD_TYPES, TDConfig, apply_targeted_dropout, parse_kinds, transformer_selector
from ..sparsity.baselines import L0_FORMS, METHODS as BASELINE_METHODS, BaselineConfig, apply_baseline
from ..sparsity.baselines import OPTION_DEFAULTS as BASELINE_DEFAULTS

SPARSITY_METHODS = ("td",) + BASELINE_METHODS


def _number(parse, valid, expected):
    """An argparse type: ``parse(text)`` that must satisfy ``valid`` (NaN never does)."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return convert


_unit_interval = _number(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")
_non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_float = _number(float, lambda v: 0.0 <= v < math.inf, "a non-negative number")
_positive_float = _number(float, lambda v: 0.0 < v < math.inf, "a positive number")
_momentum = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")


def _targets(text):
    try:
        return ",".join(parse_kinds(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error))


def add_td_args(parser):
    """TD options; defaults are None so that named architectures can set their own."""
    group = parser.add_argument_group("targeted dropout")
    group.add_argument("--td-type", choices=TD_TYPES, help="what is targeted (none disables TD)")
    group.add_argument("--td-gamma", type=_unit_interval, metavar="G", help="targeted fraction")
    group.add_argument("--td-alpha", type=_unit_interval, metavar="A", help="drop probability of a targeted element")
    group.add_argument("--td-ramp-updates", type=_non_negative_int, metavar="R",
                       help="ramp gamma and alpha over R and 2R updates (0: constant)")
    group.add_argument("--td-targets", type=_targets, metavar="LIST",
                       help="comma list from attn,ffn,embed,output")
    group.add_argument("--td-eval-mask", action="store_true", default=None,
                       help="in eval mode remove the bottom-gamma set (validation of ramping TD)")


def add_baseline_args(parser):
    """Options of the baselines (``--sparsity-method`` other than td); defaults None."""
    group = parser.add_argument_group("sparsity baselines")
    group.add_argument("--sparsity-method", choices=SPARSITY_METHODS,
                       help="td (default), or a baseline on the --td-targets weights")
    group.add_argument("--drop-rate", type=_unit_interval, metavar="P",
                       help="dropout/unit_dropout rate (default: td-gamma * td-alpha, the matching rate)")
    group.add_argument("--l1-coef", type=_non_negative_float, metavar="C", help="l1: coef * sum |w|")
    group.add_argument("--l0-coef", type=_non_negative_float, metavar="C", help="l0: coef * expected open gates")
    group.add_argument("--l0-form", choices=L0_FORMS, help="l0: one gate per weight or per unit (row)")
    group.add_argument("--vd-coef", type=_non_negative_float, metavar="C", help="variational: coef * KL")
    group.add_argument("--gmp-sparsity", type=_unit_interval, metavar="S", help="gmp: final sparsity")
    group.add_argument("--gmp-start", type=_non_negative_int, metavar="T0", help="gmp: first mask update")
    group.add_argument("--gmp-steps", type=_positive_int, metavar="N", help="gmp: number of mask updates")
    group.add_argument("--gmp-interval", type=_positive_int, metavar="DT", help="gmp: updates between masks")
    group.add_argument("--smallify-coef", type=_non_negative_float, metavar="C",
                       help="smallify: coef * sum |switch|")
    group.add_argument("--smallify-momentum", type=_momentum, metavar="M",
                       help="smallify: momentum of the switch-sign mean and variance")
    group.add_argument("--smallify-threshold", type=_positive_float, metavar="T",
                       help="smallify: remove a unit once its switch-sign variance exceeds T")




def baseline_config_from_args(args) -> BaselineConfig:
    rate = args.drop_rate if getattr(args, "drop_rate", None) is not None else args.td_gamma * args.td_alpha
    return BaselineConfig(method=args.sparsity_method, drop_rate=rate, l1_coef=args.l1_coef,
                          l0_coef=args.l0_coef, l0_form=args.l0_form, vd_coef=args.vd_coef,
                          gmp_sparsity=args.gmp_sparsity, gmp_start=args.gmp_start, gmp_steps=args.gmp_steps,
                          gmp_interval=args.gmp_interval, smallify_coef=args.smallify_coef,
                          smallify_momentum=args.smallify_momentum, smallify_threshold=args.smallify_threshold)


def td_config_from_args(args) -> TDConfig:
    return TDConfig(td_type=args.td_type, gamma=args.td_gamma, alpha=args.td_alpha,
                    ramp_updates=args.td_ramp_updates, eval_mask=bool(args.td_eval_mask))


@register_model("transformer_td")
class TransformerTDModel(TransformerModel):
    """fairseq's Transformer with targeted dropout on the selected weight matrices."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        add_td_args(parser)
        add_baseline_args(parser)

    @classmethod
    def build_model(cls, args, task):
        td_base_architecture(args)
        config = td_config_from_args(args)
        model = super().build_model(args, task)
        if args.sparsity_method != "td":
            apply_baseline(model, baseline_config_from_args(args), transformer_selector(args.td_targets))
        elif config.td_type != "none":
            apply_targeted_dropout(model, config, transformer_selector(args.td_targets))
        return model


def td_base_architecture(args):
    args.td_type = getattr(args, "td_type", None) or "weight"
    for name, default in (("td_gamma", 0.75), ("td_alpha", 0.66), ("td_ramp_updates", 0),
                          ("td_targets", "attn,ffn"), ("td_eval_mask", False)) + BASELINE_DEFAULTS:
        if getattr(args, name, None) is None:
            setattr(args, name, default)


def _td_arch(name, stock_arch, tiny=False):
    @register_model_architecture("transformer_td", name)
    def arch(args):
        td_base_architecture(args)
        if tiny:
            # 2+2 layers, dim 64: small enough for tests and the demo on 2 CPU cores.
            args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 256)
            args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 256)
        stock_arch(args)
    arch.__name__ = name
    return arch


# transformer_td itself means the stock base Transformer with TD.
_td_arch("transformer_td", base_architecture)
transformer_td_tiny = _td_arch("transformer_td_tiny", tiny_architecture, tiny=True)
transformer_td_iwslt_de_en = _td_arch("transformer_td_iwslt_de_en", transformer_iwslt_de_en)
transformer_td_wmt_en_de = _td_arch("transformer_td_wmt_en_de", transformer_wmt_en_de)
transformer_td_vaswani_wmt_en_de_big = _td_arch("transformer_td_vaswani_wmt_en_de_big",
                                                transformer_vaswani_wmt_en_de_big)
