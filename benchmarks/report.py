"""What every benchmark records about the machine, and how it writes its JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


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
