"""export.py: a Hub-ready folder (weights, config, sample grid, model card with the evaluation figures and
licence) and its upload, checked on a tiny trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gan_ga_utils.errors import ExportError
from lightning_modules.export import export, export_task, push

WRITTEN = Path(__file__).parent / "data" / "written_by_9065248"

pytestmark = pytest.mark.filterwarnings("ignore::lightning_modules.file_config.DroppedSettingWarning")


@pytest.fixture(scope="module")
def metrics_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "metrics.json"
    path.write_text(json.dumps({"metrics": {"caption_accuracy/caption": 0.731, "fid": 12.5, "note": "text"},
                                "protocol": {"real_split": "test", "samples": 512, "generator": "EMA"}}))
    return path


def test_the_model_card_holds_the_metrics_licence_and_hub_metadata(tmp_path, metrics_json):
    from huggingface_hub import ModelCard

    out = export(WRITTEN / "last.ckpt", tmp_path / "export", metrics=metrics_json, license="cc-by-4.0",
                 repo_id="someone/tiny-shapes")
    card = ModelCard.load(out / "README.md")  # the Hub library's own parser
    assert card.data.license == "cc-by-4.0" and card.data.library_name == "gan-ga"
    assert card.data.pipeline_tag == "text-to-image" and "text-to-image" in card.data.tags
    assert card.data.datasets == ["shapes"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"caption_accuracy/caption": 0.731, "fid": 12.5}
    assert "| `caption_accuracy/caption` | 0.731 |" in card.text and 'load("hf://someone/tiny-shapes")' in card.text
    assert "![samples](samples.png)" in card.text and (out / "samples.png").stat().st_size > 0
    files = json.loads((out / "export.json").read_text())["files"]
    assert {"README.md", "samples.png", "config.yaml", "generator_ema.safetensors"} <= set(files)


def test_without_metrics_the_card_says_so_and_a_bad_metrics_file_is_named(tmp_path):
    out = export(WRITTEN / "last.ckpt", tmp_path / "export")
    assert "No evaluation was attached" in (out / "README.md").read_text()
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ExportError, match=r"metrics=.*metrics.json.*not a readable metrics.json"):
        export(WRITTEN / "last.ckpt", tmp_path / "again", metrics=bad)
    assert not (tmp_path / "again").exists()  # refused before anything was written


def test_push_to_hub_dry_run_lists_exactly_the_files_it_would_upload(tmp_path, capsys):
    cfg = OmegaConf.create({"ckpt_path": str(WRITTEN / "last.ckpt"), "out": str(tmp_path / "export"), "metrics": None,
                            "license": "apache-2.0", "card_prompts": ["a red circle", "a blue star"],
                            "push_to_hub": "someone/tiny-shapes", "private": False, "dry_run": True})
    out = export_task(cfg)
    (out / ".cache").mkdir()  # hidden folders (huggingface_hub's own) are not uploaded
    (out / ".cache" / "x").write_text("x")
    listed = push(out, "someone/tiny-shapes", dry_run=True)
    assert listed == sorted(["README.md", "config.yaml", "export.json", "generator_ema.safetensors", "samples.png"])
    assert "would upload to https://huggingface.co/someone/tiny-shapes: " + ", ".join(listed) in capsys.readouterr().out
    with pytest.raises(ExportError, match="user/repo"):
        push(out, "no-slash", dry_run=True)
    with pytest.raises(ExportError, match="not an export folder"):
        push(tmp_path, "someone/tiny-shapes", dry_run=True)
