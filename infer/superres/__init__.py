"""Cross-modality super-resolution (Wang et al., Nat. Methods 2019): registered pairs, baselines, evaluation."""
