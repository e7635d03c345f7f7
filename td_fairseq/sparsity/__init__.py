"""Pure-PyTorch sparsity core: masks, schedules, targeted dropout, pruning, reports.

Imports torch only; a test checks that importing it never loads fairseq.
"""
from .masks import (bernoulli_mask, bottom_k_rows, bottom_k_rows_warm, dropped_mask, targeted_count,
                    targeted_unit_mask, targeted_weight_mask, targeted_weight_mask_warm, unit_norms)
from .schedules import cubic_sparsity, td_rates
from .selection import KINDS, parse_kinds, transformer_selector, transformer_weight_kind
from .td import (TD_TYPES, TargetedDropout, TDConfig, apply_targeted_dropout, attach, attach_views, detach,
                 drop_fraction, remove_targeted_dropout, td_modules)
from .prune import MODES, SCOPES, PruneRanking, check_sparsity, sparsity_report
