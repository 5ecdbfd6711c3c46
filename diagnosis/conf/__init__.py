"""Hydra configuration of `python -m diagnosis.search` (groups: task, policy, search, monitor)."""
