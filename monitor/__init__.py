"""Runtime failure monitors: `base` (the interface), FIDeL (`fidel`, built from `encoders`, `memory`, `ot`,
`conformal`), `semantic` (which anomalies are failures), `baselines` (PaDiM, PatchCore, a conv autoencoder), `build`
(fitted and cached per policy and task), `dataset` and `evaluate` (the SimFails benchmark) and `bench` (where the
time goes)."""
