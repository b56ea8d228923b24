"""QuantumPipelines: what starts a run (triggers), the cells a train step sweeps, and how a candidate
is selected. Pure functions of the spec and of what the registry says; the pipeline reconciler drives them."""
