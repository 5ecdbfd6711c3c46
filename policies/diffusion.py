"""The diffusion policy's training loss and chunk sampler, on diffusers' noise schedules.

Training adds DDPM noise to a chunk of expert actions at a random level and teaches the network to predict that
noise; at run time DDIM walks a chunk from pure noise to actions in a few deterministic steps (eta = 0), so the only
randomness of a rollout is the starting noise, drawn from a generator the policy reseeds at every episode start.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from policies.models import DiffusionImage, ModelConfig

SCHEDULE = {"beta_schedule": "squaredcos_cap_v2", "clip_sample": True, "prediction_type": "epsilon"}
"""The cosine schedule of improved DDPM; actions live in [-1, 1], so samples are clipped there."""


def training_schedule(config: ModelConfig):
    from diffusers import DDPMScheduler  # imported here: only diffusion policies pay for it

    return DDPMScheduler(num_train_timesteps=config.diffusion_steps, **SCHEDULE)


def sampling_schedule(config: ModelConfig):
    from diffusers import DDIMScheduler

    schedule = DDIMScheduler(num_train_timesteps=config.diffusion_steps, **SCHEDULE)
    schedule.set_timesteps(config.sampling_steps)
    return schedule


def noise_prediction_loss(
    model: DiffusionImage, schedule, *, images: torch.Tensor, proprio: torch.Tensor, actions: torch.Tensor
) -> torch.Tensor:
    """MSE between the noise added to `actions` (B, chunk, action_dim) and the model's prediction of it."""
    noise = torch.randn_like(actions)
    levels = torch.randint(0, schedule.config.num_train_timesteps, (actions.shape[0],))
    noisy = schedule.add_noise(actions, noise, levels)
    return F.mse_loss(model.denoise(noisy, levels, model.encode(images, proprio)), noise)


@torch.inference_mode()
def sample_chunk(
    model: DiffusionImage, schedule, *, images: torch.Tensor, proprio: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Denoises one chunk of actions (B, chunk, action_dim) for the observations, starting from `generator`'s
    noise."""
    condition = model.encode(images, proprio)
    chunk = torch.randn((images.shape[0], model.chunk, model.action_dim), generator=generator)
    for level in schedule.timesteps:
        levels = torch.full((images.shape[0],), int(level), dtype=torch.long)
        chunk = schedule.step(model.denoise(chunk, levels, condition), level, chunk).prev_sample
    return chunk.clamp(-1.0, 1.0)
