from dataclasses import replace

import numpy as np
import pytest
import torch

from policies.checkpoint import Checkpoint, Normalization
from policies.diffusion import noise_prediction_loss, sample_chunk, sampling_schedule, training_schedule
from policies.learned import BCPolicy
from policies.models import DiffusionImage, ModelConfig, build_model

TINY = ModelConfig(arch="diffusion", channels=(8, 8), keypoints=4, hidden=(16, 16), chunk=4, execute=2)


class OracleDenoiser(torch.nn.Module):
    """Predicts exactly the noise that separates its input from a known chunk: DDIM must then land on that chunk,
    which checks that the sampler walks the schedule's noise levels the way training added them."""

    def __init__(self, target: torch.Tensor, schedule):
        super().__init__()
        self.target, self.chunk, self.action_dim = target, target.shape[1], target.shape[2]
        self.alphas = schedule.alphas_cumprod

    def encode(self, images, proprio):
        return torch.zeros(images.shape[0], 1)

    def denoise(self, noisy, levels, condition):
        keep = self.alphas[levels].reshape(-1, 1, 1)
        return (noisy - keep.sqrt() * self.target) / (1 - keep).sqrt()


def test_ddim_sampling_recovers_the_chunk_an_exact_denoiser_points_at():
    schedule = sampling_schedule(TINY)
    target = torch.linspace(-0.9, 0.9, TINY.chunk * 7).reshape(1, TINY.chunk, 7)
    images, proprio = torch.zeros(1, 76, 76, 3, dtype=torch.uint8), torch.zeros(1, 9)
    chunk = sample_chunk(
        OracleDenoiser(target, schedule), schedule, images=images, proprio=proprio, generator=torch.Generator()
    )
    assert torch.allclose(chunk, target, atol=1e-4)


def test_noise_prediction_loss_trains_the_denoiser():
    torch.manual_seed(0)
    model = build_model(replace(TINY, hidden=(64, 64)))
    schedule = training_schedule(TINY)
    images = torch.randint(0, 256, (4, 76, 76, 3), dtype=torch.uint8)
    # One chunk to learn: an exact noise predictor exists, so the loss can fall far.
    proprio, actions = torch.randn(4, 9), (torch.rand(1, TINY.chunk, 7) * 2 - 1).expand(4, -1, -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> float:
        torch.manual_seed(1)  # the same noise and levels before and after
        return noise_prediction_loss(model, schedule, images=images, proprio=proprio, actions=actions).item()

    before = loss()
    for _ in range(200):
        step = noise_prediction_loss(model, schedule, images=images, proprio=proprio, actions=actions)
        optimizer.zero_grad()
        step.backward()
        optimizer.step()
    assert loss() < 0.8 * before


@pytest.fixture
def policy():
    torch.manual_seed(0)
    model = build_model(TINY)
    assert isinstance(model, DiffusionImage)
    return BCPolicy(Checkpoint("lift", TINY, Normalization([0.0] * 9, [1.0] * 9), model.state_dict()))


def observation(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    return {
        "robot0_eef_pos": rng.normal(size=3),
        "robot0_eef_quat": rng.normal(size=4),
        "robot0_gripper_qpos": rng.normal(size=2),
        "agentview_image": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8),
    }


def test_policy_replans_every_execute_steps_and_repeats_after_reset(policy, monkeypatch):
    import policies.diffusion

    calls = []
    original = policies.diffusion.sample_chunk
    monkeypatch.setattr(policies.diffusion, "sample_chunk", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = [policy.act(observation(t)) for t in range(5)]
    assert len(calls) == 3  # steps 0, 2 and 4 start a chunk (execute = 2)
    assert all(a.shape == (7,) and np.all(np.abs(a) <= 1.0) for a in first)
    policy.reset()
    again = [policy.act(observation(t)) for t in range(5)]
    assert np.allclose(first, again)  # the same observations after a reset: the same actions
    assert not np.allclose(first[0], first[2])  # a new chunk for a new observation
