"""What every benchmark records about the machine, and how it writes its JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    import torch

    return {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), **cpu_info(),
            "platform": platform.platform(), "torch": torch.__version__}


def cpu_info() -> dict:
    """The CPU's model name and the vector features that decide CPU speed (bf16 is emulated without
    AVX512-BF16 / AMX)."""
    import torch

    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"cpu_model": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_native_bf16": bool(flags & {"avx512_bf16", "amx_bf16"}), "cpu_avx512": "avx512f" in flags}


def write(report: dict, out: Path | None) -> None:
    """Print the report as JSON and, with ``out``, write it there too."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def evaluate(ckpt: Path | str, samples: int, out_dir: Path, env: dict) -> dict:
    """``evaluate.py`` on ``samples`` test captions of a checkpoint (its run's default metrics), run in
    ``out_dir``; its ``metrics.json``. Exits with evaluate.py's error output when it fails."""
    ev = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), f"ckpt_path={ckpt}", f"num_samples={samples}",
                         "split=test", f"hydra.run.dir={out_dir}"], env=env, capture_output=True, text=True)
    if ev.returncode != 0:
        sys.exit(f"evaluate.py {ckpt} failed:\n{ev.stderr[-4000:]}")
    return json.loads((out_dir / "metrics.json").read_text())


def batches_seen(ckpt: Path) -> int:
    """The batches a gan-ga training checkpoint had trained."""
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["gan_ga"]["batches_seen"])
