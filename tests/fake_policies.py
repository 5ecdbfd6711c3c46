"""Fast, predictable policies under test for search tests (`policy.name=tests.fake_policies:BlueAverse`)."""

import os
import signal
from pathlib import Path

import numpy as np

from policies.scripted import ScriptedExpert


class BlueAverse(ScriptedExpert):
    """The scripted expert, except that it freezes whenever the scene looks blue: it fails under a blue table or
    blue light and succeeds (in about 35 steps) under everything else."""

    def __init__(self, task):
        super().__init__(task)
        self.obs_keys = (*self.obs_keys, "agentview_image")

    def act(self, obs):
        frame = obs["agentview_image"].astype(float)
        if (frame[..., 2] - frame[..., 0]).mean() > 30:
            return np.array([0, 0, 0, 0, 0, 0, -1.0])
        return super().act(obs)


class _AfterEpisodes(BlueAverse):
    """BlueAverse that calls `fire()` once, at the start of the episode after `after` finished ones (an episode
    counts once it ran MIN_STEPS steps, so a policy check at load does not). Fault tests use it to interrupt or
    kill a search at an exact rollout, never racing the clock."""

    MIN_STEPS = 5

    def __init__(self, task, after: int):
        self.after, self.episodes, self.steps, self.fired = after, 0, 0, False
        super().__init__(task)  # resets, so the counters come first

    def reset(self):
        if self.steps >= self.MIN_STEPS:
            self.episodes += 1
        self.steps = 0
        if self.episodes == self.after and not self.fired:
            self.fired = True
            self.fire()
        super().reset()

    def act(self, obs):
        self.steps += 1
        return super().act(obs)

    def fire(self):
        raise NotImplementedError


class SelfInterrupting(_AfterEpisodes):
    """Sends Ctrl-C (SIGINT) to its own process after FAILSCOPE_TEST_AFTER episodes: run it in-process
    (search.n_envs=1), where the search's own Ctrl-C handling receives it."""

    def __init__(self, task):
        super().__init__(task, int(os.environ["FAILSCOPE_TEST_AFTER"]))

    def fire(self):
        os.kill(os.getpid(), signal.SIGINT)


class SelfKilling(_AfterEpisodes):
    """Kills its own worker process (SIGKILL, as the OOM killer would) after FAILSCOPE_TEST_AFTER episodes, once:
    the file FAILSCOPE_TEST_MARKER records that it has, so a resumed search runs through. Workers only."""

    def __init__(self, task):
        super().__init__(task, int(os.environ["FAILSCOPE_TEST_AFTER"]))
        self.marker = Path(os.environ["FAILSCOPE_TEST_MARKER"])

    def fire(self):
        try:  # exclusive create: of workers firing together, one dies
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os.kill(os.getpid(), signal.SIGKILL)


class Motionless(ScriptedExpert):
    """Never moves, so it never succeeds: for collections that must give up early."""

    def act(self, obs):
        return np.array([0, 0, 0, 0, 0, 0, -1.0])
