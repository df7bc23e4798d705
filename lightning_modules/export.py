"""A trained generator as safetensors + YAML: what ``export.py`` writes and ``generate.py`` reads.

An export folder holds

* ``generator_ema.safetensors``  the EMA generator (the weights every sample and metric use);
* ``encoder.safetensors``        only when the text encoder was trained (LoRA / last-N): a frozen
  pretrained encoder is reloaded from ``encoder.pretrained`` as during training;
* ``config.yaml``                the run's resolved config (model, encoder, fusion, data);
* ``samples.png``                a grid of the data config's sample prompts (4 noises each);
* ``README.md``                  the model card: Hugging Face Hub metadata (licence, tags, library,
  data set), how to load it, the evaluation figures of ``evaluate.py``'s ``metrics.json`` when one
  is given, the sample grid;
* ``export.json``                provenance: source checkpoint and its SHA-256, batches trained,
  file digests.

``push_to_hub=user/repo`` uploads the folder to the Hub with ``huggingface_hub`` (``dry_run=true``
lists the files it would upload and uploads nothing); ``generate.py``, ``demo.py`` and
``lightning_modules.load`` read it back as ``hf://user/repo``.

This module only writes; :func:`lightning_modules.loading.load_module` reads an export folder (and a
checkpoint) with safetensors and YAML: nothing is unpickled, so an export from elsewhere cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from safetensors.torch import save_file

from gan_ga_utils.errors import ExportError
from gan_ga_utils.files import atomic_write, sha256_file, write_text
from lightning_modules.loading import CONFIG_FILE, ENCODER_FILE, GENERATOR_FILE, INFO_FILE, is_export, load_module
from lightning_modules.sampling import labelled_grid, sample_noise, save_png, to_uint8

CARD_FILE, SAMPLES_FILE = "README.md", "samples.png"


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous tensors that share no memory."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def export(ckpt_path: str | Path, out_dir: str | Path, *, metrics: str | Path | None = None,
           license: str = "apache-2.0", card_prompts: list[str] | None = None, repo_id: str | None = None) -> Path:
    """Write the EMA generator of a training checkpoint to ``out_dir`` (created; files replaced), with
    its model card (``metrics``: an ``evaluate.py`` metrics.json of this checkpoint)."""
    source = Path(ckpt_path)
    if is_export(source) or source.is_dir():
        raise ExportError(f"ckpt_path={str(source)!r} is a folder{' (already an export)' if is_export(source) else ''}: "
                          "export.py reads a training checkpoint, e.g. ckpt_path=RUN/checkpoints/last.ckpt")
    report = _read_metrics(metrics) if metrics else None
    module = load_module(source, "cpu")
    out = Path(out_dir)
    files = {GENERATOR_FILE: _plain(module.generator_ema.state_dict())}
    if module.encoder.weights_in_checkpoint:
        files[ENCODER_FILE] = _plain(module.encoder.state_dict())
    for name, tensors in files.items():
        with atomic_write(out / name) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "gan-ga", "part": name.split(".")[0]})
    write_text(out / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.create(module.run_config)))
    prompts = list(card_prompts or module.run_config.get("data", {}).get("sample_prompts") or ["a red circle"])[:8]
    save_png(_sample_grid(module, prompts), out / SAMPLES_FILE)
    write_text(out / CARD_FILE, model_card(module.run_config, int(module.batches_seen), report, license, prompts,
                                                 repo_id))
    info = {"format": "gan-ga export v1", "source_checkpoint": str(source),
            "source_sha256": sha256_file(source), "batches_trained": int(module.batches_seen),
            "files": {name: sha256_file(out / name) for name in (*files, CONFIG_FILE, SAMPLES_FILE, CARD_FILE)}}
    write_text(out / INFO_FILE, json.dumps(info, indent=2))
    return out


def _read_metrics(path: str | Path) -> dict:
    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"metrics={str(path)!r}: not a readable metrics.json ({err}); give the file evaluate.py "
                          "wrote for this checkpoint, or leave metrics unset") from err
    if not isinstance(report, dict) or not isinstance(report.get("metrics"), dict):
        raise ExportError(f"metrics={str(path)!r}: has no 'metrics' mapping (evaluate.py writes one)")
    return report


def _sample_grid(module, prompts: list[str], per_prompt: int = 4):
    """The prompts under ``per_prompt`` noises of seed 0: one labelled row each (generate.py's grid)."""
    z = sample_noise(per_prompt, module.z_dim, seed=0)
    pixels = to_uint8(module.sample(prompts, z))
    rows = pixels.reshape(len(prompts), per_prompt, *pixels.shape[1:])
    return labelled_grid(rows, prompts, scale=max(1, 64 // rows.shape[2]))


def _name(target: str) -> str:
    return str(target).rsplit(".", 1)[-1]


def model_card(config: dict, batches: int, report: dict | None, license: str, prompts: list[str],
               repo_id: str | None = None) -> str:
    """The export's README.md: Hub metadata (YAML front matter), use, training, evaluation, samples."""
    hub_name = repo_id or "USER/REPO"
    data, encoder, model = config.get("data", {}), config.get("encoder", {}), config.get("model", {})
    data_name = str(data.get("name") or _name(data.get("_target_", "data")).replace("DataModule", "").lower())
    numbers = {k: v for k, v in sorted((report or {}).get("metrics", {}).items())
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    rows = [f"| `{key}` | {value:.4g} |" for key, value in numbers.items()]
    meta: dict = {"license": license, "library_name": "gan-ga", "pipeline_tag": "text-to-image",
                  "tags": ["text-to-image", "gan", "gan-ga", "pytorch-lightning"], "datasets": [data_name]}
    if numbers:  # the Hub's evaluation results format
        meta["model-index"] = [{"name": repo_id.rsplit("/", 1)[-1] if repo_id else "gan-ga", "results": [{
            "task": {"type": "text-to-image"}, "dataset": {"name": data_name, "type": data_name},
            "metrics": [{"type": k, "value": float(v)} for k, v in numbers.items()]}]}]
    front = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---"]
    body = [
        "", f"# gan-ga text-to-image GAN ({data_name}, {data.get('image_size')} px)", "",
        f"A {_name(model.get('_target_', ''))} trained with gan-ga: text encoder `{encoder.get('pretrained')}` "
        f"({encoder.get('mode', 'frozen')}), fusion `{_name(config.get('fusion', {}).get('_target_', ''))}`, "
        f"{batches} training batches on `{data_name}`. The weights are the exponential moving average of "
        "the generator (safetensors); `config.yaml` holds the run's settings.", "",
        "## Use", "", "```python", "import lightning_modules", "",
        f'model = lightning_modules.load("hf://{hub_name}")  # or the path of this folder',
        f"images = model.generate([{prompts[0]!r}], num=8, seed=0)  # PIL images", "```", "",
        f"or `python generate.py ckpt_path=hf://{hub_name} prompts='[\"...\"]'`.", "",
        "## Evaluation", ""]
    if rows:
        protocol = report.get("protocol", {})
        body += [f"`evaluate.py` on the `{protocol.get('real_split', '?')}` split, "
                 f"{protocol.get('samples', '?')} samples ({protocol.get('generator', 'EMA')} generator):", "",
                 "| metric | value |", "|---|---|", *rows, ""]
    else:
        body += ["No evaluation was attached to this export (`export.py metrics=RUN/.../metrics.json`).", ""]
    body += ["## Samples", "", f"![samples]({SAMPLES_FILE})", "",
             "Each row is one prompt under four noise vectors (seed 0).", "",
             "## Licence", "", f"The weights: `{license}`. Check the terms of the training data as well.", ""]
    return "\n".join(front + body)


def upload_files(folder: Path) -> list[str]:
    """The files ``push`` uploads: every file of the export folder, as repository paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def push(folder: str | Path, repo_id: str, *, private: bool = False, dry_run: bool = False) -> list[str]:
    """Upload an export folder to the Hugging Face Hub repository ``repo_id`` (created if needed);
    with ``dry_run`` nothing is sent. Returns the uploaded (or to-be-uploaded) paths."""
    folder = Path(folder)
    if not is_export(folder):
        raise ExportError(f"{folder}: not an export folder (export.py writes one)")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ExportError(f"push_to_hub={repo_id!r}: a Hub repository is user/repo")
    files = upload_files(folder)
    if dry_run:
        return files
    from huggingface_hub import HfApi

    api = HfApi(library_name="gan-ga")
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=files,
                          commit_message="gan-ga export")
    except Exception as err:  # noqa: BLE001 - network, auth: one message with the fix
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"push_to_hub={repo_id!r}: the upload failed ({type(err).__name__}: {first}); log in "
                          f"with `huggingface-cli login` (a write token), or check the name. The folder {folder} "
                          "is complete and can be pushed again") from err
    return files


def export_task(cfg) -> Path:
    """export.py's work: ``ckpt_path`` and ``out`` from the config, then the optional upload."""
    out = export(cfg.ckpt_path, cfg.out, metrics=cfg.get("metrics"), license=str(cfg.get("license") or "apache-2.0"),
                 card_prompts=list(cfg.card_prompts) if cfg.get("card_prompts") else None,
                 repo_id=str(cfg.push_to_hub) if cfg.get("push_to_hub") else None)
    print(f"exported the EMA generator of {cfg.ckpt_path} to {out}")
    if cfg.get("push_to_hub"):
        files = push(out, str(cfg.push_to_hub), private=bool(cfg.get("private")), dry_run=bool(cfg.get("dry_run")))
        verb = "would upload" if cfg.get("dry_run") else "uploaded"
        print(f"{verb} to https://huggingface.co/{cfg.push_to_hub}: " + ", ".join(files))
    return out
