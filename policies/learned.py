"""A trained BC checkpoint as a `Policy` (see policies.base)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from envs.tasks import get_task
from policies.base import image_key
from policies.checkpoint import Checkpoint, load_checkpoint
from policies.threads import STEP_THREADS, step_threads

PROPRIO_KEYS = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
STATE_KEY = "object-state"


def proprio_vector(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The proprioceptive input every BC architecture reads, in a fixed order."""
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in PROPRIO_KEYS])


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Crops the middle `size`×`size` of (..., H, W, C) images."""
    h, w = images.shape[-3], images.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size, :]


DIFFUSION_SEED = 0
"""Every episode's sampling noise starts from this seed, so a rollout depends on its observations only (the same
episode seed gives the same rollout whichever worker runs it, in whatever order)."""


class BCPolicy:
    """Runs a BC network step by step; the RNN variant carries its hidden state through the episode, the diffusion
    variant a queue of the actions left of its last sampled chunk."""

    action_dim = 7

    def __init__(self, checkpoint: Checkpoint):
        self.checkpoint = checkpoint
        self.task = get_task(checkpoint.task)
        self.config = checkpoint.model_config
        self.model = checkpoint.build()
        self.norm = checkpoint.normalization
        self.image_key = image_key(self.task.camera)
        keys = list(PROPRIO_KEYS)
        if self.config.arch == "bc_lowdim":
            keys.append(STATE_KEY)
        else:
            keys.append(self.image_key)
        self.obs_keys = tuple(keys)
        self.threads: int | None = STEP_THREADS
        """Torch threads of one step (policies/threads.py); None leaves torch's default."""
        self.hidden: torch.Tensor | None = None
        self.queue: list[np.ndarray] = []
        if self.config.arch == "diffusion":
            from policies.diffusion import sampling_schedule

            self.schedule = sampling_schedule(self.config)
            self.generator = torch.Generator().manual_seed(DIFFUSION_SEED)

    @classmethod
    def load(cls, path: str | Path) -> BCPolicy:
        return cls(load_checkpoint(path))

    def reset(self) -> None:
        self.hidden = None
        self.queue = []
        if self.config.arch == "diffusion":
            self.generator.manual_seed(DIFFUSION_SEED)

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        with step_threads(self.threads), torch.inference_mode():
            return self._act(obs)

    def _act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        proprio = torch.from_numpy(self.norm.proprio(proprio_vector(obs)).astype(np.float32))[None]
        arch = self.config.arch
        if arch == "bc_lowdim":
            state = torch.from_numpy(self.norm.state(np.asarray(obs[STATE_KEY])).astype(np.float32))[None]
            action = self.model(proprio, state)[0]
        else:
            frame = obs[self.image_key]
            expected = (self.config.image_size, self.config.image_size, 3)
            if frame.shape != expected or frame.dtype != np.uint8:
                raise ValueError(f"{self.image_key}: expected uint8 {expected}, got {frame.dtype} {frame.shape}")
            image = center_crop(torch.from_numpy(np.ascontiguousarray(frame)), self.config.crop_size)[None]
            if arch == "bc_rnn":
                out, self.hidden = self.model(image[None], proprio[None], self.hidden)
                action = out[0, -1]
            elif arch == "diffusion":
                return self._next_from_chunk(image, proprio)
            else:
                action = self.model(image, proprio)[0]
        return action.numpy().astype(float)

    def _next_from_chunk(self, image: torch.Tensor, proprio: torch.Tensor) -> np.ndarray:
        """Samples a new chunk when the last one's first `execute` actions are spent, then plays the next."""
        from policies.diffusion import sample_chunk

        if not self.queue:
            chunk = sample_chunk(self.model, self.schedule, images=image, proprio=proprio, generator=self.generator)
            self.queue = list(chunk[0, : self.config.execute].numpy().astype(float))
        return self.queue.pop(0)
