"""Files gan-ga loads are data: a checkpoint or export cannot run code, a changed byte is refused,
non-finite weights are never written, a resume takes this run's settings, and SIGTERM under DDP
stops every rank together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import zygote
from conftest import FAST, ROOT, compose_train, run_script
from gan_ga_utils.errors import GenerationError
from lightning_modules.checkpointing import (
    DIGEST_KEY,
    CheckpointError,
    check_checkpoint,
    content_digest,
    resolve_resume,
)
from lightning_modules.file_config import BUILDS, FileConfigError, checked_file_config
from lightning_modules.loading import load_module
from lightning_modules.training import run_training


def _rewrite(ckpt_path: Path, out: Path, change) -> Path:
    """A copy of a checkpoint changed by ``change(ckpt)``, with a fresh content digest (as anyone can
    write): what a file from elsewhere can hold."""
    ckpt = torch.load(ckpt_path, weights_only=True)
    change(ckpt)
    ckpt[DIGEST_KEY] = content_digest(ckpt)
    torch.save(ckpt, out)
    return out


def _generate(ckpt: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_script("generate.py", f"ckpt_path={ckpt}", "prompts=[a red circle]", "num_per_prompt=1",
                      f"out_dir={tmp_path / 'gen'}", f"hydra.run.dir={tmp_path / 'gen_run'}", cwd=tmp_path)


@pytest.mark.integration
@pytest.mark.parametrize("where", ["encoder.config_overrides.payload", "model.sample_prompts"])
def test_a_checkpoint_whose_config_names_code_is_refused(trained_run, tmp_path, where):
    marker = tmp_path / "written_by_the_file"
    payload = {"_target_": "gan_ga_utils.files.write_text", "path": str(marker), "text": "ran"}

    def plant(ckpt):
        config = ckpt["gan_ga"]["config"]
        if where.startswith("encoder"):
            config["encoder"]["config_overrides"]["payload"] = payload
        else:
            config["model"]["sample_prompts"] = [payload]

    evil = _rewrite(trained_run / "checkpoints" / "last.ckpt", tmp_path / "evil.ckpt", plant)
    result = _generate(evil, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()
    assert "evil.ckpt" in result.stderr and where in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_an_export_that_asks_to_run_the_models_own_code_is_refused(trained_run, tmp_path):
    from gan_ga_utils.files import sha256_file
    from lightning_modules.export import export

    folder = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    marker = tmp_path / "remote_code_ran"
    remote = folder / "remote"  # a Hugging Face folder whose config asks for its own Python class
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}))
    (remote / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                    "from transformers import PretrainedConfig\n"
                                    "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["encoder"]["pretrained"] = str(remote)
    config["encoder"]["config_overrides"]["trust_remote_code"] = True
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    info = json.loads((folder / "export.json").read_text())
    info["files"]["config.yaml"] = sha256_file(folder / "config.yaml")  # digests match: only the content is hostile
    (folder / "export.json").write_text(json.dumps(info))

    result = _generate(folder, tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()
    assert "config.yaml" in result.stderr and "encoder.config_overrides.trust_remote_code" in result.stderr


@pytest.mark.integration
def test_a_flipped_byte_in_an_export_or_a_checkpoint_is_refused(trained_run, tmp_path):
    from lightning_modules.export import export

    folder = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    weights = folder / "generator_ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4096:] = bytes(4096)
    weights.write_bytes(bytes(data))
    result = _generate(folder, tmp_path)
    assert result.returncode == 2 and "generator_ema.safetensors: damaged" in result.stderr, result.stderr[-2000:]

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    good = trained_run / "checkpoints" / "last.ckpt"
    older = run / "checkpoints" / "older.ckpt"
    older.write_bytes(good.read_bytes())
    os.utime(older, (time.time() - 100, time.time() - 100))
    ckpt = torch.load(good, weights_only=True)
    raw = ckpt["state_dict"]["generator_ema.seed.weight"].numpy().tobytes()[:256]
    data = bytearray(good.read_bytes())
    at = bytes(data).find(raw)
    assert at > 0
    data[at + 64: at + 128] = bytes(64)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the digest"):
        check_checkpoint(last)
    messages: list[str] = []
    assert Path(resolve_resume("auto", None, run, warn=messages.append)).name == "older.ckpt"
    assert any("last.ckpt: damaged" in m for m in messages)
    result = _generate(last, tmp_path)
    assert result.returncode == 2 and "does not match the digest" in result.stderr


@pytest.mark.integration
def test_a_checkpoint_of_an_earlier_version_with_its_retired_keys_loads(trained_run, tmp_path):
    """Files written before the measured-and-removed D variants went carry their keys: the settings
    are dropped with a warning naming them, and the file loads and generates alike; one whose
    removed part had weights is refused by the weight check, naming the weights."""
    from lightning_modules.evaluation import generate_for
    from lightning_modules.file_config import DroppedSettingWarning

    def earlier(extra_weights=False):
        def change(ckpt):
            model = ckpt["gan_ga"]["config"]["model"]
            model["contrastive_fakes"] = False
            model["discriminator"].update(match_features="own" if extra_weights else "shared",
                                          match_aggregate="weighted", match_resolution=4, match_global=False,
                                          match_channels=32)
            if extra_weights:  # the removed image tower's weights
                ckpt["state_dict"]["discriminator.match_tower.conv.weight"] = torch.zeros(32, 3, 3, 3)
        return change

    old = _rewrite(trained_run / "checkpoints" / "last.ckpt", tmp_path / "old.ckpt", earlier())
    now = load_module(trained_run / "checkpoints" / "last.ckpt")
    with pytest.warns(DroppedSettingWarning, match=r"old.ckpt.*model.contrastive_fakes=False.*"
                                                   r"model.discriminator.match_features='shared'"):
        then = load_module(old)
    assert torch.equal(generate_for(then, ["a red circle"], 1, seed=0), generate_for(now, ["a red circle"], 1, seed=0))
    own = _rewrite(trained_run / "checkpoints" / "last.ckpt", tmp_path / "own.ckpt", earlier(extra_weights=True))
    with pytest.raises(GenerationError, match=r"own.ckpt.*do not fit.*discriminator.match_tower.conv.weight"):
        load_module(own)


@pytest.mark.integration
def test_a_checkpoint_with_non_finite_weights_is_refused(trained_run, tmp_path):
    def poison(ckpt):
        ckpt["state_dict"]["generator.seed.weight"][0, 0] = float("nan")

    bad = _rewrite(trained_run / "checkpoints" / "last.ckpt", tmp_path / "nan.ckpt", poison)
    with pytest.raises(CheckpointError, match="non-finite tensors.*generator.seed.weight"):
        check_checkpoint(bad)


@pytest.mark.integration
def test_a_run_whose_weights_turn_non_finite_writes_no_such_checkpoint(tmp_path):
    from gan_ga_utils.errors import DivergenceError

    cfg = compose_train(tmp_path, ["trainer.max_steps=60", "trainer.val_check_interval=100",
                                   "callbacks.model_checkpoint.every_n_batches=2", "model.max_bad_batches=4",
                                   "+callbacks.set_lr._target_=conftest.SetLearningRate",
                                   "+callbacks.set_lr.at=3", "+callbacks.set_lr.lr=inf"])
    with pytest.raises(DivergenceError):
        run_training(cfg)
    files = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    assert files, "the checkpoint before the divergence is kept"
    for path in files:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["gan_ga"]["batches_seen"] <= 3, path
        for name, value in ckpt["state_dict"].items():
            assert not value.is_floating_point() or torch.isfinite(value).all(), (path, name)
    chosen = check_checkpoint(resolve_resume("auto", None, tmp_path, warn=lambda *_: None))
    assert chosen.batches <= 3


@pytest.mark.integration
def test_periodic_checkpoints_come_every_n_batches_and_not_at_each_validation(tmp_path):
    run_training(compose_train(tmp_path, ["trainer.max_steps=12", "trainer.val_check_interval=2",
                                          "callbacks.model_checkpoint.every_n_batches=3"]))
    folder = tmp_path / "checkpoints"
    saved = sorted(torch.load(p, weights_only=True)["gan_ga"]["batches_seen"] for p in folder.glob("epoch*.ckpt"))
    assert saved == [3, 6], saved  # 6 batches, a validation after every second one
    assert (folder / "last.ckpt").exists()


@pytest.mark.integration
def test_a_resume_takes_this_runs_learning_rate(tmp_path):
    first = compose_train(tmp_path, ["trainer.max_steps=8", "trainer.val_check_interval=100",
                                     "callbacks.model_checkpoint.every_n_batches=2"])
    run_training(first)
    folder = tmp_path / "checkpoints"
    last = folder / "last.ckpt"  # written for the same state as the periodic one: a link, not a copy
    assert last.is_symlink() and last.resolve() == (folder / "epoch000-step0000008.ckpt").resolve()
    stray = folder / ".last.ckpt.4242.0badc0de.tmp"  # left by a save that was killed
    stray.write_bytes(b"partial")
    (tmp_path / "csv" / "metrics.csv").unlink(missing_ok=True)
    resumed = compose_train(tmp_path, ["trainer.max_steps=14", "trainer.val_check_interval=100",
                                       "trainer.log_every_n_steps=1", "resume=auto", "model.optimizer_g.lr=1e-5"])
    with pytest.warns(UserWarning, match=r"model\.optimizer_g\.lr: 0\.0008 -> 1e-05"):
        run_training(resumed)
    header, *rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("train/lr_g")
    logged = [float(r.split(",")[column]) for r in rows if r.split(",")[column]]
    assert logged and all(v == pytest.approx(1e-5) for v in logged)
    assert not stray.exists()


@pytest.mark.integration
def test_a_failed_write_names_its_cause_and_keeps_the_previous_checkpoint(tmp_path):
    """A file size limit makes the write fail part way, as a full disk does."""
    code = f"""
import resource, signal, sys, torch
sys.path.insert(0, {str(ROOT)!r})
from lightning_modules.checkpointing import AtomicCheckpointIO
from gan_ga_utils.errors import CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
io = AtomicCheckpointIO()
io.save_checkpoint({{"state_dict": {{"w": torch.ones(10)}}}}, {str(tmp_path / "last.ckpt")!r})
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    io.save_checkpoint({{"state_dict": {{"w": torch.ones(1 << 20)}}}}, {str(tmp_path / "last.ckpt")!r})
except CheckpointError as err:
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "could not be written" in result.stdout and "MiB are free" in result.stdout, result.stdout + result.stderr
    assert "previous checkpoints are whole" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w"].shape == (10,)


@pytest.mark.integration
def test_ddp_sigterm_during_a_checkpoint_save_stops_both_ranks_cleanly(tmp_path):
    run = tmp_path / "ddp"
    args = [sys.executable, str(ROOT / "train.py"), *FAST, "trainer.devices=2",
            "trainer.max_steps=400", "trainer.val_check_interval=1000", "callbacks.model_checkpoint.every_n_batches=3",
            "+callbacks.signal_on_save._target_=conftest.SignalOnSave", f"hydra.run.dir={run}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    try:  # a session of its own (the signal goes to its process group), killed with its ranks on a timeout
        proc = zygote.run(args, cwd=tmp_path, env=env, timeout=180)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"DDP run hung after SIGTERM: {hung.stderr[-3000:]}")
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM received: saved" in out + err
    info = check_checkpoint(run / "checkpoints" / "last.ckpt")
    assert 3 <= info.batches < 200
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_file_configs_may_build_every_class_gan_gas_own_configs_name():
    """The allowlist covers conf/: every ``_target_`` there, at its place, is one a file may name."""
    for group in ("encoder", "fusion", "model", "data"):
        for path in (ROOT / "conf" / group).glob("*.yaml"):
            node = yaml.safe_load(path.read_text()) or {}
            if group == "model" and "model" in node:
                node = node["model"]
            stack = [(group, node)]
            while stack:
                where, value = stack.pop()
                if isinstance(value, dict):
                    if "_target_" in value:
                        assert value["_target_"] in BUILDS.get(where, ()), (path, where, value["_target_"])
                    stack += [(f"{where}.{k}", v) for k, v in value.items()]


def test_a_file_config_keeps_only_what_builds_a_model():
    config = {"encoder": {"_target_": "lightning_modules.components.text_encoders.HFTextEncoder", "pretrained": "x"},
              "fusion": {"_target_": "lightning_modules.components.fusion.AffineFusion", "_partial_": True},
              "model": {"_target_": "lightning_modules.text_to_image_gan.TextToImageGAN"},
              "trainer": {"_target_": "lightning.Trainer"}, "callbacks": {"x": {"_target_": "os.system"}}}
    assert set(checked_file_config(config, "f")) == {"encoder", "fusion", "model"}
    for change, key in [({"model": {"_target_": "os.system"}}, "model._target_"),
                        ({"encoder": {**config["encoder"], "max_length": "${oc.env:HOME}"}}, "encoder.max_length"),
                        ({"encoder": {**config["encoder"], "surprise": {"nested": 1}}}, "encoder.surprise"),
                        ({"fusion": {**config["fusion"], "_args_": ["x"]}}, "fusion._args_")]:
        with pytest.raises(FileConfigError, match=key.replace(".", r"\.").replace("$", r"\$")):
            checked_file_config({**config, **change}, "f")
    # a plain value under a key the class does not take (a setting of an earlier version) is dropped
    from lightning_modules.file_config import DroppedSettingWarning

    with pytest.warns(DroppedSettingWarning, match=r"f: dropped settings .*encoder\.surprise='\$\{oc\.env:HOME\}'"):
        kept = checked_file_config({**config, "encoder": {**config["encoder"], "surprise": "${oc.env:HOME}"}}, "f")
    assert "surprise" not in kept["encoder"]


@pytest.mark.integration
def test_a_resume_into_a_model_of_other_shapes_names_the_misfit(tmp_path):
    run_training(compose_train(tmp_path, ["trainer.max_steps=4", "trainer.val_check_interval=100"]))
    result = run_script("train.py", *FAST, "trainer.max_steps=8", "model.generator.base_channels=16",
                        "resume=auto", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "do not fit" in result.stderr and "generator." in result.stderr and "Traceback" not in result.stderr
    assert "model.generator.base_channels: 8 -> 16" in result.stderr


@pytest.mark.integration
def test_an_export_or_checkpoint_whose_weights_do_not_fit_its_config_is_named(trained_run, tmp_path):
    from gan_ga_utils.errors import UserError
    from gan_ga_utils.files import sha256_file
    from lightning_modules.export import export
    from lightning_modules.loading import load_exported

    folder = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["generator"]["base_channels"] *= 2
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    info = json.loads((folder / "export.json").read_text())
    info["files"]["config.yaml"] = sha256_file(folder / "config.yaml")
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"export.*weights do not fit the model its config.yaml describes"):
        load_exported(folder)

    def wider(ckpt):
        ckpt["gan_ga"]["config"]["model"]["generator"]["base_channels"] *= 2

    bad = _rewrite(trained_run / "checkpoints" / "last.ckpt", tmp_path / "wider.ckpt", wider)
    with pytest.raises(UserError, match=r"wider\.ckpt.*weights do not fit the model its config describes"):
        load_module(bad)
