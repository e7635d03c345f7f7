"""Pure-PyTorch sparsity core: masks, patterns, schedules, weight views (targeted dropout
and the baselines), pruning, the option table, reports.

Imports torch only; a test checks that importing it never loads fairseq.
"""
from .masks import (bernoulli_mask, bottom_k_rows, bottom_k_rows_warm, dropped_mask, targeted_count,
                    targeted_unit_mask, targeted_weight_mask, targeted_weight_mask_warm, unit_norms)
from .patterns import follows_pattern, nm_mask, parse_pattern, pattern_name
from .schedules import cubic_sparsity, td_rates
from .selection import KINDS, parse_kinds, transformer_selector
from .views import (WeightView, attach_view, attach_views, detach_view, drop_fraction, remove_views,
                    set_num_updates, views_of)
from .td import TD_TYPES, TargetedDropout, TDConfig, apply_targeted_dropout
from .prune import MODES, SCOPES, PruneRanking, check_sparsity, sparsity_report
