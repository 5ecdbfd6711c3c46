"""Fast, predictable policies under test for search tests (`policy.name=tests.fake_policies:BlueAverse`)."""

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
