"""One test per bug found in review (issue 11, a-l); each failed before its fix."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf


def test_g_export_given_an_export_folder_is_a_clear_error(trained_run, tmp_path):
    from lightning_modules.errors import ExportError
    from lightning_modules.export import export

    out = export(trained_run / "checkpoints" / "last.ckpt", tmp_path / "export")
    with pytest.raises(ExportError, match=r"already an export.*ckpt_path=RUN/checkpoints/last.ckpt"):
        export(out, tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize("devices", ["auto", -1, None])
def test_h_auto_devices_on_a_cpu_only_host_is_one_process(devices, monkeypatch):
    from lightning_modules.training import resolve_strategy

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for accelerator in ("auto", "cpu"):
        cfg = OmegaConf.create({"accelerator": accelerator, "devices": devices, "strategy": "auto", "num_nodes": 1})
        assert resolve_strategy(cfg) == "auto"
    cfg = OmegaConf.create({"accelerator": "cpu", "devices": 2, "strategy": "auto", "num_nodes": 1})
    assert resolve_strategy(cfg) == "ddp_gan"
