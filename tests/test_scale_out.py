"""Beyond one process: what the ranks of a DDP run agree on (a real two-process gloo group), device
choice, Optuna sweeps, submitit launchers. The extras ([sweep], [slurm],
[stream]) are installed by `.ci/run`; the base install stays free of them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tomllib
import torch
import yaml
from omegaconf import OmegaConf

from conftest import ROOT, run_script

EXTRAS = {"sweep": ("optuna", "hydra_plugins.hydra_optuna_sweeper"),
          "slurm": ("submitit", "hydra_plugins.hydra_submitit_launcher"),
          "stream": ("litdata", "webdataset")}


@pytest.mark.integration
def test_the_base_install_is_free_of_the_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    for extra in EXTRAS:
        for requirement in project["optional-dependencies"][extra]:
            assert requirement.split("=")[0].lower() not in base, requirement
    # training, generation, evaluation and export import none of them
    code = ("import sys, lightning_modules.training, lightning_modules.generation, lightning_modules.evaluation, "
            "lightning_modules.export, datamodules.shapes, datamodules.captions; "
            f"loaded = [m for m in {sorted(m for ms in EXTRAS.values() for m in ms)!r} if m in sys.modules]; "
            "print(loaded); assert not loaded")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


@pytest.mark.integration
def test_optuna_sweep_runs_its_trials_and_writes_the_best(tmp_path, oracle_cache):
    pytest.importorskip("optuna")
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "hparams_search=shapes_optuna", "hydra.sweeper.n_trials=2", "encoder=tiny",
                        "trainer.fast_dev_run=true", f"paths.cache_dir={oracle_cache}", "data.num_workers=0",
                        "callbacks.progress_bar=null", "callbacks.sample_metrics.num_samples=16",
                        f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["name"] == "optuna" and 0.0 <= best["best_value"] <= 1.0
    assert set(best["best_params"]) == {"model.optimizer_g.lr", "model.optimizer_d.lr", "model.gp_weight",
                                        "model.n_critic", "fusion"}
    trials = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert trials == ["0", "1"]
    for trial in trials:
        overrides = (sweep / trial / ".hydra" / "overrides.yaml").read_text()
        assert "model.optimizer_g.lr=" in overrides and "fusion=" in overrides
        assert "`Trainer.fit` stopped" in (sweep / trial / "train.log").read_text()


@pytest.mark.integration
def test_a_sweep_whose_metric_is_not_logged_stops_with_the_key(tmp_path, oracle_cache):
    pytest.importorskip("optuna")
    result = run_script("train.py", "-m", "hparams_search=shapes_optuna", "hydra.sweeper.n_trials=1", "encoder=tiny",
                        "trainer.fast_dev_run=true", f"paths.cache_dir={oracle_cache}", "data.num_workers=0",
                        "optimized_metric=val/nothing", "callbacks.sample_metrics=null",
                        f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, timeout=600)
    assert result.returncode == 2
    assert "optimized_metric='val/nothing' was not logged" in result.stderr


@pytest.mark.integration
def test_submitit_local_launcher_runs_every_job(tmp_path):
    """The launcher, not the metrics (the Optuna sweep above optimises one): D's margin is the swept value."""
    pytest.importorskip("submitit")
    sweep = tmp_path / "sweep"
    result = run_script("train.py", "-m", "hydra/launcher=submitit_local", "fusion=concat,affine", "encoder=tiny",
                        "trainer.fast_dev_run=true", "callbacks.sample_metrics=null",
                        "optimized_metric=val/match_margin", "data.num_workers=0", "callbacks.progress_bar=null",
                        "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep}",
                        cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for job, fusion in ((0, "concat"), (1, "affine")):
        job_dir = sweep / str(job)
        assert f"fusion={fusion}" in (job_dir / ".hydra" / "overrides.yaml").read_text()
        assert "`Trainer.fit` stopped" in (job_dir / "train.log").read_text()


def test_the_slurm_launcher_asks_for_one_task_per_gpu(tmp_path):
    """The composed launcher config (no SLURM here): nodes and tasks follow the trainer."""
    pytest.importorskip("submitit")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "trainer.devices=8", "trainer.num_nodes=4"],
                      return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (4, 8, 8)
    assert launcher["max_num_timeout"] > 0 and launcher["signal_delay_s"] >= 60


def test_inside_a_slurm_job_ranks_are_not_spawned_and_resume_is_automatic(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from lightning_modules.training import resolve_strategy, under_submitit

    trainer = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "auto", "num_nodes": 1})
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert not under_submitit()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert under_submitit("slurm") and resolve_strategy(trainer) == "ddp_gan"


def _img2dataset_shard(path, start: int, n: int) -> None:
    """An img2dataset-style tar: KEY.jpg + KEY.txt + KEY.json per sample."""
    import io
    import json
    import tarfile

    import caption_layouts as layouts

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in range(start, start + n):
            image = layouts.write_image(path.parent / "tmp" / f"{i}.jpg", "rgb", seed=i)
            add(f"{i:09d}.jpg", image.read_bytes())
            add(f"{i:09d}.txt", f"a picture with number {i}".encode())
            add(f"{i:09d}.json", json.dumps({"key": f"{i:09d}"}).encode())
        add(f"{start + n:09d}.jpg", image.read_bytes())  # an image without its caption
        add(f"{start + n + 1:09d}.txt", b"a caption without its image")


@pytest.mark.integration
def test_webdataset_tars_are_read_in_place_with_skips_counted(tmp_path):
    from conftest import compose_train
    from lightning_modules.loading import build
    from lightning_modules.training import run_training

    root = tmp_path / "tars"
    _img2dataset_shard(root / "00000.tar", 0, 10)
    _img2dataset_shard(root / "sub" / "00001.tar", 100, 10)
    (root / "00002.tar").write_bytes(b"not a tar at all")
    overrides = ["data=webdataset", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
                 "data.num_workers=0"]
    cfg = compose_train(tmp_path / "run", overrides)
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    counts = datamodule.skips.counts()
    assert counts["images_without_captions"] == 2 and counts["missing_images"] == 2 and counts["unreadable_tars"] == 1
    assert sum(d.num_images for d in (datamodule.datasets["train"], datamodule.datasets["val"])) == 20
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["caption"][0].startswith("a picture with number")
    run_training(compose_train(tmp_path / "fit", [*overrides, "trainer.fast_dev_run=true"]))


@pytest.mark.integration
def test_a_requeued_slurm_job_resumes_from_its_folder(tmp_path, monkeypatch):
    import torch

    from conftest import compose_train
    from lightning_modules.training import run_training

    run_training(compose_train(tmp_path, ["trainer.max_steps=4", "trainer.val_check_interval=100"]))
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    run_training(compose_train(tmp_path, ["trainer.max_steps=8", "trainer.val_check_interval=100"]))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["gan_ga"]["batches_seen"] == 4  # 2 batches, then 2 more after the "requeue"


@pytest.mark.parametrize("devices", ["auto", -1, None])
def test_auto_devices_on_a_cpu_only_host_is_one_process(devices, monkeypatch):
    from lightning_modules.training import resolve_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("auto", "cpu"):
        cfg = OmegaConf.create({"accelerator": accelerator, "devices": devices, "strategy": "auto", "num_nodes": 1})
        assert resolve_strategy(cfg) == "auto"
    cfg = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "auto", "num_nodes": 1})
    assert resolve_strategy(cfg) == "ddp_gan"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both scenarios of bugs a and i, run once in one two-process group."""
    import process_group

    outcomes = process_group.run_on_processes(process_group.review_scenarios, str(tmp_path_factory.mktemp("ranks")))
    return {scenario: {rank: value[scenario] if status == "ok" else (status, value)
                       for rank, (status, value) in outcomes.items()} for scenario in ("a", "i", "i_oracle")}


@pytest.mark.integration
def test_every_rank_takes_rank_zeros_best_checkpoint_decision(two_ranks):
    """Rank 0's FID beats the best by the last bit, rank 1's equals it: both ranks save best.ckpt
    (a save holds a barrier: a rank that does not save leaves the others waiting) with rank 0's value."""
    outcomes = two_ranks["a"]
    assert sorted(outcomes) == [0, 1], f"a rank never finished (hung): {outcomes}"
    assert all(status == "ok" for status, _ in outcomes.values()), outcomes
    rank0 = float(np.nextafter(0.25, 0.0))
    assert outcomes[0][1] == outcomes[1][1] == {"saved": [rank0], "best": rank0}


@pytest.mark.integration
def test_a_failure_on_process_zero_stops_every_process(two_ranks):
    outcomes = two_ranks["i"]
    assert sorted(outcomes) == [0, 1], f"a process never finished (hung at a barrier): {outcomes}"
    assert all(status == "ok" for status, _ in outcomes.values()), outcomes
    failing = {rank: outcome[1]["failing"] for rank, outcome in outcomes.items()}
    assert failing[0] == ("error", {"type": "OSError", "bases": ["OSError", "Exception", "BaseException", "object"],
                                    "message": "No space left on device: data/cache/text_features"})
    status, error = failing[1]
    assert status == "error" and error["type"] == "DistributedError" and "UserError" in error["bases"]
    assert "building the text cache failed on process 0" in error["message"]
    assert "No space left on device" in error["message"]
    # success: the others build after process 0 (here: read the file it wrote)
    assert [outcomes[r][1]["writing"] for r in (0, 1)] == [("ok", "from process 0")] * 2
    # the training metrics' shapes oracle: a failure while rank 0 trains it reaches rank 1 too
    oracle = two_ranks["i_oracle"]
    assert sorted(oracle) == [0, 1], f"a process never finished (hung at a barrier): {oracle}"
    assert oracle[0][1]["type"] == "OSError" and oracle[1][1]["type"] == "DistributedError", oracle
    assert "training the shapes oracle failed on process 0: OSError: No space left" in oracle[1][1]["message"]
