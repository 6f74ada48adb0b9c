"""The lab wing: simulation-driven evaluations, scenarios, benches and simulated data sets. It combines stages
(simulator, engines, tracking, readout), scores them against ground truth, and may import every stage; stage
packages never import it. What its modules share (machine record, simulator config of a shape, seed-or-path
check) is in deepz.lab.scaffold; JSON results go through deepz.results."""
