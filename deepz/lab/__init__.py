"""The lab wing: evaluations and benches that combine stages (simulator, engines, tracking, readout) and score
them against ground truth. Stage packages never import it."""
