"""Runtime failure monitors: `base` (the interface), FIDeL (`fidel`, built from `encoders`, `memory`, `ot`,
`conformal`), `build` (fitted and cached per policy and task) and `bench` (where the time goes)."""
