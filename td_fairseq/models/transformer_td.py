"""fairseq adapter: ``transformer_td``, a stock Transformer with a weight view attached after build.

Nothing of fairseq's Transformer is copied: the parent class builds the model, then the core
attaches targeted dropout (``apply_targeted_dropout``), a baseline's view
(``--sparsity-method``) or the frozen pruning mask (``--freeze-mask``) to every selected
weight. Options come from the core's one table (``sparsity.options``). State-dict keys stay
those of the stock model plus each view's own state under ``<module>.td.`` (random-targeted
TD's ranking, L0's log alpha, GMP's mask, ...), all folded into plain weights on export
(``tools.checkpoint.stock_checkpoint``).
"""
import dataclasses
import difflib
import importlib.util
import os
import sys
from typing import Optional

import torch

from fairseq.dataclass import FairseqDataclass
from fairseq.models import ARCH_CONFIG_REGISTRY, register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel
from omegaconf import DictConfig, OmegaConf

from .. import precision
from ..sparsity import apply_targeted_dropout, transformer_selector
from ..sparsity import options as sparsity_options
from ..sparsity.baseline_views import FrozenMask
from ..sparsity.baselines import apply_baseline
from ..sparsity.views import attach_views, views_of
from ..transformer_archs import STOCK_ARCH, TINY_ARCH


def _field_type(option):
    if option.flag:
        return bool
    kind = type(option.default) if option.default is not None else float
    return Optional[kind] if option.default is None else kind


# The table's options as a fairseq dataclass: a hydra/YAML model section (fairseq-hydra-train,
# ``model: {_name: transformer_td_tiny, td_gamma: 0.5, ...}``) is checked against it, and another
# pipeline's own model config can inherit it.
TargetedDropoutConfig = dataclasses.make_dataclass(
    "TargetedDropoutConfig",
    [(o.name, _field_type(o), dataclasses.field(default=o.default, metadata={"help": o.help}))
     for o in sparsity_options.OPTIONS],
    bases=(FairseqDataclass,))


def check_yaml_options(cfg) -> None:
    """Type-check the table's options in an OmegaConf model config; refuse misspelt ones."""
    known = set(sparsity_options.option_keys())
    ours = {k: cfg[k] for k in cfg if k in known and cfg[k] is not None}
    prefixes = tuple({k.split("_")[0] + "_" for k in known})
    unknown = [k for k in cfg if k.startswith(prefixes) and k not in known and k not in _STOCK_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise ValueError(f"transformer_td: unknown model option {unknown[0]!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else ""))
    OmegaConf.merge(OmegaConf.structured(TargetedDropoutConfig), ours)  # raises on a wrong type


@register_model("transformer_td")
class TransformerTDModel(TransformerModel):
    """fairseq's Transformer with targeted dropout (or another weight view) on the selected matrices."""

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        sparsity_options.add_arguments(parser, arch_defaults=True)

    @classmethod
    def build_model(cls, args, task):
        if isinstance(args, DictConfig):
            check_yaml_options(args)
        td_base_architecture(args)
        try:
            td = sparsity_options.td_config(args)
            baseline = sparsity_options.baseline_config(args)
            sparsity_options.check_combination(args)
        except ValueError as error:  # a model built from a config, not the command line
            raise ValueError(f"transformer_td: {error}") from None
        model = super().build_model(args, task)
        select = transformer_selector(args.td_targets)
        if args.freeze_mask:
            # the mask is set from the weights loaded into the model: upgrade_state_dict_named
            attach_views(model, lambda weight: FrozenMask(weight), select)
        elif baseline is not None:
            apply_baseline(model, baseline, select)
        elif td.td_type != "none":
            apply_targeted_dropout(model, td, select)
        model.autocast_dtype = torch.bfloat16 if getattr(args, "autocast_bf16", False) else None
        return model

    def forward(self, *args, **kwargs):
        """With ``--bf16`` (see ``use_autocast_for_bf16``): the forward under bf16 autocast. The
        weights and their views stay fp32; fairseq's criterion casts the logits up before the
        log-softmax. Beam search calls the encoder and decoder directly: decoders choose their
        own precision (``tools.translate``)."""
        dtype = getattr(self, "autocast_dtype", None)
        if dtype is None:  # fp32: nothing added to the training step
            return super().forward(*args, **kwargs)
        with precision.autocast(self.encoder.embed_tokens.weight.device.type, dtype):
            return super().forward(*args, **kwargs)

    def upgrade_state_dict_named(self, state_dict, name):
        """A stock (pruned) checkpoint has no frozen mask yet: it is the loaded weight's zeros."""
        super().upgrade_state_dict_named(state_dict, name)
        prefix = f"{name}." if name else ""
        for module_name, module in views_of(self):
            key = f"{prefix}{module_name}"
            if isinstance(module.td, FrozenMask) and f"{key}.td.mask" not in state_dict \
                    and f"{key}.weight" in state_dict:
                state_dict[f"{key}.td.mask"] = state_dict[f"{key}.weight"] == 0


# stock Transformer options that share a prefix with ours (``drop``, ``l1``, ...)
_STOCK_KEYS = {"dropout"}


def td_base_architecture(args):
    sparsity_options.fill_defaults(args)


def _precision_options(args):
    """Where ``bf16`` is set: the command line's Namespace, or, for a hydra model section
    (fairseq-hydra-train calls the arch with ``cfg.model``), the ``common`` section of its config."""
    if not isinstance(args, DictConfig):
        return args
    root = args._get_root()
    return root.common if root is not args and "common" in root else None


def use_autocast_for_bf16(args, log=None):
    """fairseq 0.12 reads ``--bf16`` as a TPU run (``args.tpu = True``: torch_xla, then a crash
    on any other device) and, on a GPU, casts the whole model to bf16, so the targeted set would
    be ranked on bf16 weights. Without torch_xla we undo both and train under bf16 autocast
    instead (``TransformerTDModel.forward``): fp32 master weights that are the model's own, fp32
    loss, and measured faster on a CPU (docs/RESULTS.md). The choice is kept in the model config
    (``autocast_bf16``), so a resumed run and ``fairseq-validate`` use it too. Under
    fairseq-hydra-train the same is done to ``common.bf16``: the trainer reads it after the
    model is built."""
    options = _precision_options(args)
    if not getattr(options, "bf16", False) or importlib.util.find_spec("torch_xla") is not None:
        return
    if getattr(options, "memory_efficient_bf16", False):
        raise ValueError("--memory-efficient-bf16 keeps no fp32 weights; td_fairseq trains bf16 as autocast "
                         "over fp32 weights: use --bf16")
    options.bf16, options.tpu, args.autocast_bf16 = False, False, True
    device = "cpu" if getattr(options, "cpu", False) or not torch.cuda.is_available() else "cuda"
    precision.warn_if_slow(device, log or (lambda line: print(line, file=sys.stderr)))


def _td_arch(name, stock_arch, tiny=False):
    @register_model_architecture("transformer_td", name)
    def arch(args):
        td_base_architecture(args)
        try:
            sparsity_options.check_combination(args)
            use_autocast_for_bf16(args)
        except ValueError as error:  # fairseq's parser has no hook for combinations: one line, exit 1
            print(f"{os.path.basename(sys.argv[0] or 'fairseq')}: error: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        if tiny:
            # 2+2 layers, dim 64: small enough for tests and the demo on 2 CPU cores.
            args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 256)
            args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", 256)
        stock_arch(args)
    arch.__name__ = name
    return arch


# one named arch per entry of the export map: each is the stock arch of the same name plus TD
for _name, _stock in STOCK_ARCH.items():
    _td_arch(_name, ARCH_CONFIG_REGISTRY[_stock], tiny=_name == TINY_ARCH)
