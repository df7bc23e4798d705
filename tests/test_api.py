"""The Python API (lightning_modules/api.py): load a checkpoint, an export folder or hf://user/repo in
one line, generate PIL images or tensors in another; the images are generate.py's."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import lightning_modules
from gan_ga_utils.errors import GenerationError

WRITTEN = Path(__file__).parent / "data" / "written_by_9065248"  # a tiny trained checkpoint and its export
PROMPTS = ["a red circle", "a small blue star on the left"]

pytestmark = pytest.mark.filterwarnings("ignore::lightning_modules.file_config.DroppedSettingWarning")


@pytest.fixture(scope="module")
def model():
    return lightning_modules.load(WRITTEN / "last.ckpt", device="cpu")


def test_three_lines_give_pil_images_prompt_major(model):
    images = model.generate(PROMPTS, num=3, seed=0)
    assert len(images) == 6 and all(isinstance(im, Image.Image) for im in images)
    assert {im.size for im in images} == {(32, 32)} and {im.mode for im in images} == {"RGB"}
    tensor = model.generate(PROMPTS, num=3, seed=0, output="tensor")
    assert tensor.shape == (6, 3, 32, 32) and float(tensor.min()) >= -1 - 1e-6
    again = np.stack([np.asarray(im) for im in images])
    assert np.array_equal(again, ((tensor.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    # one seed: image j of every prompt has noise row j; the noise decides, so the images differ
    assert not torch.equal(tensor[0], tensor[1])
    # (alone, a caption is padded less: equal up to float rounding)
    assert torch.allclose(model.generate(PROMPTS[1], num=3, seed=0, output="tensor"), tensor[3:], atol=1e-5)
    assert not torch.equal(model.generate(PROMPTS, num=3, seed=1, output="tensor"), tensor)


def test_the_images_are_those_generate_py_writes(model, tmp_path):
    from lightning_modules.generation import generate

    cfg = OmegaConf.create({"ckpt_path": str(WRITTEN / "last.ckpt"), "prompts": PROMPTS, "prompts_file": None,
                            "num_per_prompt": 2, "seed": 5, "truncation": None, "out_dir": str(tmp_path),
                            "device": "cpu", "batch_size": 64})
    manifest = generate(cfg)
    strip = np.asarray(Image.open(tmp_path / manifest["images"][1]["file"]).convert("RGB"))
    ours = [np.asarray(im) for im in model.generate(PROMPTS, num=2, seed=5)[2:]]
    assert np.array_equal(strip, np.concatenate(ours, axis=1))


def test_an_export_folder_loads_alike(model):
    exported = lightning_modules.load(WRITTEN / "export", device="cpu")
    assert torch.equal(exported.generate(PROMPTS, num=2, output="tensor"), model.generate(PROMPTS, num=2, output="tensor"))
    assert exported.image_size == 32


def test_bad_arguments_name_the_fix(model, tmp_path):
    with pytest.raises(GenerationError, match="num=0"):
        model.generate("a red circle", num=0)
    with pytest.raises(GenerationError, match="non-empty captions"):
        model.generate(["a red circle", "  "])
    with pytest.raises(GenerationError, match="no such file or export folder"):
        lightning_modules.load(tmp_path / "nope.ckpt")
    with pytest.raises(GenerationError, match="hf://user/repo"):
        lightning_modules.load("hf://just-a-name")


def _hub_cache_copy(folder: Path, cache: Path, repo: str, commit: str) -> None:
    """``folder`` laid out as huggingface_hub caches a downloaded model repository: blobs named by
    their SHA-256, a snapshot of relative symlinks per commit, ``refs/main`` naming the commit."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for path in folder.iterdir():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, root / "blobs" / digest)
        (snapshot / path.name).symlink_to(os.path.relpath(root / "blobs" / digest, snapshot))


def test_hf_names_resolve_through_the_hub_cache_offline(model, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    assert hub.HF_HUB_OFFLINE  # conftest: no network is tried
    commit = "0123456789abcdef0123456789abcdef01234567"
    _hub_cache_copy(WRITTEN / "export", tmp_path / "hub", "someone/tiny-shapes", commit)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    from lightning_modules.loading import resolve_source

    assert resolve_source("hf://someone/tiny-shapes") == tmp_path / "hub" / "models--someone--tiny-shapes" / \
        "snapshots" / commit
    hub_model = lightning_modules.load("hf://someone/tiny-shapes", device="cpu")
    assert torch.equal(hub_model.generate(PROMPTS, output="tensor"), model.generate(PROMPTS, output="tensor"))
    with pytest.raises(GenerationError, match="hf://someone/missing.*could not fetch.*HF_HUB_OFFLINE"):
        lightning_modules.load("hf://someone/missing")
