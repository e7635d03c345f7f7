"""fairseq-facing tools: checkpoint export and pruning, BLEU sweeps, data preparation, the demo."""
