"""Placeholder until the BLEU-vs-sparsity demo lands."""
import sys

print("make demo: not yet available (the pruning sweep demo is the next issue)", file=sys.stderr)
sys.exit(0)
