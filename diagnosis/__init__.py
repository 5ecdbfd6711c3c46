"""The failure search and everything a user reads: ranking, metrics, report, failure dataset."""

from gymnasium.envs.registration import register

register(id="failscope/Lift-Search-v0", entry_point="diagnosis.search_env:FailureSearchEnv", kwargs={"task": "lift"})
register(id="failscope/Can-Search-v0", entry_point="diagnosis.search_env:FailureSearchEnv", kwargs={"task": "can"})
register(
    id="failscope/Lift-ContinuousSearch-v0",
    entry_point="diagnosis.continuous_env:ContinuousSearchEnv",
    kwargs={"task": "lift"},
)
