"""evaluate.py folders=[REAL_DIR,GENERATED_DIR]: gan-ga's FID / KID / IS of two image folders, and
the proof that they are torch-fidelity's own numbers for the same folders and weights file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CONF, run_script


def _write_folder(folder: Path, count: int, size: int, seed: int, smooth: bool) -> Path:
    """``count`` PNGs of ``size`` px: smooth colour gradients with a little noise, or plain noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[:, None, None]
    for i in range(count):
        if smooth:
            pixels = 255 * (ramp * rng.uniform(0, 1, 3) + ramp.transpose(1, 0, 2) * rng.uniform(0, 1, 3)) / 2
            pixels = pixels + rng.normal(0, 8, (size, size, 3))
        else:
            pixels = rng.uniform(0, 255, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory, random_inception):
    """Two folders of different distributions and sizes, one Kaiming-random Inception weights file.
    The generated folder also holds what torch-fidelity reads (a grayscale PNG, an RGBA PNG, a .JPG)
    and what it skips (a text file, a subfolder's image)."""
    root = tmp_path_factory.mktemp("fid_folders")
    real = _write_folder(root / "real", 12, 32, seed=0, smooth=True)
    fake = _write_folder(root / "fake", 9, 64, seed=1, smooth=False)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(fake / "gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)).save(fake / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(fake / "photo.JPG", quality=90)
    (fake / "notes.txt").write_text("not an image")
    _write_folder(fake / "nested", 1, 64, seed=3, smooth=True)
    return real, fake, random_inception


@pytest.mark.integration
def test_folder_fid_kid_is_equal_torch_fidelitys_command_line(folders, tmp_path):
    """gan-ga's ``evaluate.py folders=[REAL,FAKE]`` and ``fidelity --input1 FAKE --input2 REAL`` (IS
    is of ``--input1`` there, of the second folder here) on the same images and weights file.

    FID: absolute 1e-3, the bound asked for. It is ~57 here (a Kaiming-random Inception, 12 vs 12
    images), so that is ~2e-5 relative, tighter than a relative 1e-3 would be; both sides run the
    same Inception on the same uint8 pixels, and the measured gap (~1.4e-6) is arithmetic only:
    torch-fidelity keeps the feature means in float32 and takes the eigenvalues with numpy's LAPACK,
    gan-ga works in float64 with torch's. KID (~0.1; torch-fidelity's kernel is float32) and IS (~1)
    are small numbers, so they are held to a relative 1e-4 instead. KID uses every image in each
    subset on both sides (subset size 12), so the random subsets cannot differ; IS uses the same
    seed (0) and 10 splits."""
    real, fake, weights = folders
    out = tmp_path / "eval"
    ours = run_script("evaluate.py", f"folders=[{real},{fake}]", "metrics=[fid,kid,is]", f"inception_weights={weights}",
                      "device=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    mine, protocol = report["metrics"], report["protocol"]
    assert protocol["images"] == {"real": 12, "generated": 12}  # 9 + gray + rgba + JPG; not the .txt nor nested/
    assert protocol["folders"] == {"real": str(real), "generated": str(fake)}
    assert len(protocol["inception"]["weights_sha256"]) == 64 and "sorted" in protocol["read"]
    assert "fid" in ours.stdout  # the printed table

    theirs = subprocess.run([str(Path(sys.executable).parent / "fidelity"), "--cpu", "--json", "--silent", "--no-cache",
                             "--save-cpu-ram", "--fid", "--kid", "--isc", "--input1", str(fake), "--input2", str(real),
                             "--feature-extractor-weights-path", str(weights), "--kid-subset-size", "12",
                             "--rng-seed", "0"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "TORCH_HOME": str(tmp_path / "torch")})
    assert theirs.returncode == 0, theirs.stderr[-3000:]
    fidelity = json.loads(theirs.stdout)
    print(f"FID: gan-ga {mine['fid']!r}, torch-fidelity {fidelity['frechet_inception_distance']!r}")
    assert mine["fid"] > 1.0  # different distributions: a real distance, not a degenerate ~0
    assert abs(mine["fid"] - fidelity["frechet_inception_distance"]) < 1e-3
    for key, their_key in (("kid", "kernel_inception_distance_mean"), ("is", "inception_score_mean"),
                           ("is_std", "inception_score_std")):
        assert mine[key] == pytest.approx(fidelity[their_key], rel=1e-4, abs=0), key


@pytest.mark.integration
@pytest.mark.parametrize("args, message", [
    (["folders=[{real}]"], "folders=['{real}']: give two image folders"),
    (["folders=[{real},{tmp}/missing]"], "folders[1]='{tmp}/missing': no such folder"),
    (["folders=[{tmp}/empty,{real}]"], "folders[0]='{tmp}/empty': no .png/.jpg/.jpeg image"),
    (["folders=[{real},{tmp}/broken]"], "broken/1.png: cannot be read as an image"),
    (["folders=[{real},{real}]", "ckpt_path={tmp}/last.ckpt"], "are both set"),
    (["folders=[{real},{real}]", "inception_weights=null"], "inception_weights is not set"),
    (["folders=[{real},{real}]", "metrics=[clip_score]"], "metrics=['clip_score'] cannot score image folders"),
    ([], "ckpt_path is not set"),
])
def test_folder_errors_name_the_key(folders, tmp_path, args, message):
    """Each mistake is a UserError naming the key or path and the fix, before any image is read."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gan_ga_utils.errors import UserError
    from lightning_modules.evaluation import evaluate

    real, _, weights = folders
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "1.png").write_text("a text file named .png")
    fill = {"real": real, "tmp": tmp_path}
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("evaluate", overrides=["metrics=[fid]", f"inception_weights={weights}", "device=cpu",
                                             f"out_dir={tmp_path / 'eval'}", *(a.format(**fill) for a in args)])
    with pytest.raises(UserError) as err:
        evaluate(cfg)
    assert message.format(**fill) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "eval").exists()


@pytest.mark.integration
def test_a_folder_error_on_the_command_line_is_one_line_and_exit_2(folders, tmp_path):
    real, _, weights = folders
    result = run_script("evaluate.py", f"folders=[{real},{tmp_path / 'missing'}]", "metrics=[fid]",
                        f"inception_weights={weights}", f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (f"gan-ga: folders[1]={str(tmp_path / 'missing')!r}: no such "
                                                      "folder; pass an existing folder of PNG/JPEG images")
