"""Patch encoders: the shipped Lite0 weights map onto timm exactly and classify sensibly; other timm models load
from local files."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import ImageNetInfo

from monitor.encoders import (
    EncoderConfig,
    PatchEncoder,
    fold_batchnorm,
    load_classifier,
    lukemelas_to_timm,
    read_state_dict,
    shipped_weights_path,
)
from monitor.fidel import torch_threads

TEXTURES = Path(importlib.util.find_spec("robosuite").submodule_search_locations[0]) / "models" / "assets" / "textures"
SAMPLES = [  # (picture shipped with an installed package, its ImageNet class)
    (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", "military uniform"),
    (TEXTURES / "lemon.png", "lemon"),
    (TEXTURES / "bread.png", "French loaf"),
]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """As the monitor runs (see monitor.fidel.TORCH_THREADS): small tensors, and a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def encoder() -> PatchEncoder:
    return PatchEncoder()


def frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 84, 84, 3), dtype=np.uint8)


def test_every_shipped_tensor_maps_onto_timm_with_its_shape():
    source = read_state_dict(shipped_weights_path())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = lukemelas_to_timm(source, model)
    target = model.state_dict()
    assert len(source) == len(mapped) == len(target) == 296
    assert all(mapped[k].shape == target[k].shape for k in target)
    assert torch.equal(mapped["blocks.3.0.conv_pw.weight"], source["_blocks.5._expand_conv.weight"])
    assert torch.equal(mapped["blocks.0.0.conv_pw.weight"], source["_blocks.0._project_conv.weight"])


def test_mapping_errors_name_the_tensor():
    source = read_state_dict(shipped_weights_path())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    with pytest.raises(ValueError, match="have no source weight"):
        lukemelas_to_timm({k: v for k, v in source.items() if k != "_fc.bias"}, model)
    with pytest.raises(ValueError, match="'_blocks.99._bn0.weight'"):
        lukemelas_to_timm({**source, "_blocks.99._bn0.weight": torch.zeros(3)}, model)
    with pytest.raises(ValueError, match="_conv_stem.weight.*which is \\(32, 3, 3, 3\\)"):
        lukemelas_to_timm({**source, "_conv_stem.weight": torch.zeros(16, 3, 3, 3)}, model)


def test_mapped_classifier_recognises_imagenet_pictures():
    classifier = load_classifier(EncoderConfig())
    mean = torch.tensor(classifier.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(classifier.pretrained_cfg["std"]).view(1, 3, 1, 1)
    info = ImageNetInfo()
    for path, label in SAMPLES:
        image = np.array(Image.open(path).convert("RGB").resize((224, 224)))
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - mean) / std
        with torch.no_grad():
            top1 = int(classifier(x).argmax())
        assert info.index_to_description(top1).startswith(label), (path.name, info.index_to_description(top1))


def test_patch_features_shape_batching_and_determinism(encoder):
    batch = frames(3)
    features = encoder(batch)
    assert features.shape == (3, 49, 64) == (3, encoder.num_patches, encoder.feature_dim)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    torch.testing.assert_close(encoder(batch[1:2])[0], features[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(encoder.encode(batch, batch_size=2), features)


def test_bad_frames_are_rejected(encoder):
    with pytest.raises(ValueError, match=r"uint8 \(B, H, W, 3\), got float32 \(2, 84, 84, 3\)"):
        encoder(frames(2).astype(np.float32))
    with pytest.raises(ValueError, match="got uint8 \\(84, 84, 3\\)"):
        encoder(frames(1)[0])


def test_fold_batchnorm_keeps_outputs():
    model = timm.create_model("resnet18", pretrained=False).eval()
    for module in model.modules():  # non-trivial statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        assert fold_batchnorm(model) == 20
        torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


def test_resnet_from_a_local_safetensors_file(tmp_path):
    model = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    encoder = PatchEncoder(EncoderConfig(model="resnet18", weights=str(path), stages=(1, 2), projection=32))
    assert encoder.feature_dim == 32
    assert encoder(frames(2)).shape == (2, 49, 32)


def test_dinov2_vit_from_a_local_pth_file(tmp_path):
    kwargs = {"img_size": 98, "depth": 2}
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, **kwargs)
    path = tmp_path / "dinov2.pth"
    torch.save(model.state_dict(), path)
    config = EncoderConfig(
        model="vit_small_patch14_dinov2", weights=str(path), stages=(1,), input_size=98, model_kwargs=kwargs
    )
    assert PatchEncoder(config)(frames(2)).shape == (2, 49, 384)
    with pytest.raises(ValueError, match=r"set model_kwargs=\{'img_size': 112\}"):
        PatchEncoder(replace(config, input_size=112))


def test_bad_configs_are_named(tmp_path):
    with pytest.raises(ValueError, match="valid models for them are tf_efficientnet_lite0, efficientnet_lite0"):
        load_classifier(EncoderConfig(model="resnet18"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier(EncoderConfig(model="resnet18", weights=str(tmp_path / "missing.pth")))
    with pytest.raises(ValueError, match="stage 9 does not exist"):
        PatchEncoder(EncoderConfig(stages=(9,)))
    with pytest.raises(ValueError, match="grid"):
        EncoderConfig(grid=0)
