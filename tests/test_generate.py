"""generate.py: prompts -> PNGs from a checkpoint that the tests train."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_script
from gan_ga_utils.errors import GenerationError
from lightning_modules.generation import read_prompts
from lightning_modules.loading import load_module


@pytest.mark.integration
def test_generate_writes_one_png_per_prompt_and_a_grid(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a green star at the top\r\n\r\n  a large yellow hexagon  \n", encoding="utf-8")
    result = run_script("generate.py", f"ckpt_path={ckpt}", 'prompts=["a red circle", "a small blue square on the left"]',
                        f"prompts_file={prompts_file}", "num_per_prompt=3", "seed=7", "truncation=1.0",
                        f"out_dir={tmp_path}/out", f"hydra.run.dir={tmp_path}/hydra", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "prompts.json").read_text())
    assert [m["prompt"] for m in manifest["images"]] == [
        "a red circle", "a small blue square on the left", "a green star at the top", "a large yellow hexagon"]
    for entry in manifest["images"]:
        image = np.asarray(Image.open(tmp_path / "out" / entry["file"]))
        assert image.shape == (32, 3 * 32, 3) and image.dtype == np.uint8
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.size[0] > 3 * 32 and grid.size[1] >= 4 * 64


@pytest.mark.integration
def test_same_seed_same_images(trained_run, tmp_path):
    from omegaconf import OmegaConf

    from lightning_modules.generation import generate

    ckpt = trained_run / "checkpoints" / "last.ckpt"
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = OmegaConf.create(dict(ckpt_path=str(ckpt), prompts=["a red circle"], prompts_file=None, num_per_prompt=2,
                                    seed=seed, truncation=None, out_dir=str(tmp_path / name), device="cpu", batch_size=8))
        generate(cfg)
        outs.append(np.asarray(Image.open(tmp_path / name / "000_a_red_circle.png")))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


@pytest.mark.integration
def test_checkpoint_rebuilds_the_trained_generator(trained_run):
    module = load_module(trained_run / "checkpoints" / "last.ckpt")
    assert int(module.batches_seen) == 4 and not module.generator_ema.training


def test_bad_prompts_and_paths_are_named(tmp_path):
    with pytest.raises(GenerationError, match=r"prompts\[1\] is empty"):
        read_prompts(["a red circle", "   "], None)
    with pytest.raises(GenerationError, match="no prompts"):
        read_prompts([], None)
    with pytest.raises(GenerationError, match="prompts_file='/nonexistent.txt'"):
        read_prompts([], "/nonexistent.txt")
    with pytest.raises(GenerationError, match="no such file"):
        load_module(tmp_path / "missing.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(GenerationError, match="broken.ckpt: damaged or not a checkpoint"):
        load_module(broken)


@pytest.mark.integration
def test_export_given_an_export_folder_is_a_clear_error(trained_run, tmp_path):
    from gan_ga_utils.errors import ExportError
    from lightning_modules.export import export

    out = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    with pytest.raises(ExportError, match=r"already an export.*ckpt_path=RUN/checkpoints/last.ckpt"):
        export(out, tmp_path / "again")
    assert not (tmp_path / "again").exists()
