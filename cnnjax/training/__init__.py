"""Training: config schema, optimiser chain, train state, steps and the loop."""
