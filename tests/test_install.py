"""A non-editable install (the wheel, in a fresh virtual environment) trains and generates with the
`gan-ga` command: its configs ship inside the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import FAST, ROOT

WRITTEN = ROOT / "tests" / "data" / "written_by_9065248"


def _run(*cmd, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the clone is importable
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
def test_a_wheel_installed_in_a_fresh_venv_trains_and_generates(tmp_path):
    # built from a copy of the sources: setuptools builds in the source folder, and a build/ left
    # behind in the clone could carry modules since removed into a later wheel
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if n in {".git", ".venv", "build", "logs", "outputs", "multirun", "wandb", "__pycache__"}
        or n.endswith(".egg-info") or (Path(folder) == ROOT and n == "data")])
    wheels = tmp_path / "wheels"
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels,
                 source, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path).returncode == 0
    python = venv / "bin" / "python"
    purelib = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=tmp_path).stdout.strip())
    # the dependencies: this environment's site-packages as a plain path (its editable gan-ga finder is not run)
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q",
                     *wheels.glob("gan_ga-*.whl"), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = _run(python, "-c", "import lightning_modules, gan_ga_conf; print(lightning_modules.__file__)",
                 cwd=tmp_path)
    assert where.stdout.startswith(str(purelib)), where.stdout + where.stderr  # the installed copy, not the clone
    shipped = _run(python, "-c", "from lightning_modules.metrics import shapes_oracle as so; "
                   "print(so.SHIPPED.is_file(), so.shipped_digest() == so.renderer_digest())", cwd=tmp_path)
    assert shipped.stdout.split() == ["True", "True"], shipped.stdout + shipped.stderr  # the oracle's weights too

    work = tmp_path / "work"
    work.mkdir()
    gan_ga = venv / "bin" / "gan-ga"
    train = _run(gan_ga, "train", *FAST, "trainer.fast_dev_run=true", cwd=work)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "`Trainer.fit` stopped" in train.stdout + train.stderr and (work / "logs" / "train").is_dir()
    out = work / "images"
    generate = _run(gan_ga, "generate", f"ckpt_path={WRITTEN / 'export'}", "prompts=[a red circle]",
                    "num_per_prompt=2", f"out_dir={out}", cwd=work)
    assert generate.returncode == 0, generate.stderr[-3000:]
    assert (out / "grid.png").is_file() and (out / "000_a_red_circle.png").is_file()
    bad = _run(gan_ga, "train", "encoder=nonexistent", cwd=work)
    assert bad.returncode == 2 and "there is no conf/encoder/nonexistent.yaml" in bad.stderr
    unknown = _run(gan_ga, "fly", cwd=work)
    assert unknown.returncode == 2 and "commands: train, generate" in unknown.stderr
