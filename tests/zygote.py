"""Entry points run as separate processes without paying the third-party imports each time.

A *zygote* process imports torch, torchmetrics, transformers, hydra and omegaconf once (no gan-ga
module, and not lightning, whose import sets up its logging by what is set up before it);
:func:`run` forks it for each run. The fork sets what ``python SCRIPT ARGS`` would have:
``sys.argv``, the environment, the working directory, ``sys.path`` (the script's folder, then
``PYTHONPATH``, then the interpreter's own entries), stdin from /dev/null and stdout / stderr to
files; runs the script as ``__main__`` and exits through the interpreter's normal shutdown with the
script's status. gan-ga's own modules are imported fresh in every run. The imports take seconds of
CPU per process, which over the suite's ~40 runs of train.py, generate.py, evaluate.py, export.py
and demo.py was minutes (``GAN_GA_TESTS_NO_ZYGOTE=1``: a fresh interpreter per run instead).
Tests that signal a run or read its output while it runs start a real process (``subprocess``).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRELOAD = ("torch", "torchmetrics", "transformers", "hydra", "omegaconf")

_SERVER = r"""
import json, os, sys
base_path = [p for p in sys.path if p]
for name in PRELOAD:
    __import__(name)
requests = os.fdopen(int(sys.argv[1]), "r")
replies = os.fdopen(int(sys.argv[2]), "w", buffering=1)


def serve():
    replies.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            return request
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status, usage = os.wait4(pid, 0)
        replies.write(json.dumps({"status": os.waitstatus_to_exitcode(status),
                                  "cpu_s": usage.ru_utime + usage.ru_stime}) + "\n")
    os._exit(0)


request = serve()
del serve, requests, replies
os.setsid()  # a group of its own, as the parent's timeout kills it with its children
os.chdir(request["cwd"])
os.environ.clear()
os.environ.update(request["env"])
stdin = os.open(os.devnull, os.O_RDONLY)
os.dup2(stdin, 0)
for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
    out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, fd)
    os.close(out)
argv = list(request["argv"])
extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
first = os.getcwd() if argv[0] == "-m" else os.path.dirname(os.path.realpath(argv[0]))
sys.path[:] = [first, *extra, *base_path]
sys.argv = argv[1:] if argv[0] == "-m" else argv
del json, request, stdin, fd, path, out, extra, base_path, first
import runpy
if argv[0] == "-m":  # python -m MODULE ARGS
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
else:  # python SCRIPT ARGS
    runpy.run_path(argv[0], run_name="__main__")
"""


class _Zygote:
    def __init__(self) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        code = f"PRELOAD = {PRELOAD!r}\n{_SERVER}"
        self.process = subprocess.Popen([sys.executable, "-c", code, str(to_child_r), str(from_child_w)],
                                        pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL,
                                        cwd=tempfile.gettempdir())
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self.cpu_s = 0.0  # CPU seconds of the runs so far (they are the zygote's children, not ours)
        self._requests = os.fdopen(self._to_child, "w", buffering=1)
        if "ready" not in self._reply(300):
            raise RuntimeError("the zygote did not start")

    def _reply(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._from_child], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError
            chunk = os.read(self._from_child, 65536)
            if not chunk:
                raise RuntimeError("the zygote ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            self._requests.write(json.dumps({"argv": argv[1:], "cwd": str(cwd), "env": env, "stdout": str(out),
                                             "stderr": str(err)}) + "\n")
            pid = self._reply(60)["pid"]
            try:
                reply = self._reply(timeout)
                status, self.cpu_s = reply["status"], self.cpu_s + reply["cpu_s"]
            except TimeoutError:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self._reply(60)
                raise subprocess.TimeoutExpired(argv, timeout, out.read_bytes(), err.read_bytes()) from None
            return subprocess.CompletedProcess(argv, status, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        try:
            self._requests.close()
            os.close(self._from_child)
            self.process.wait(timeout=30)
        except Exception:  # noqa: BLE001 - at exit: make sure it is gone
            self.process.kill()


_zygote: _Zygote | None = None


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)`` for
    ``argv = [sys.executable, SCRIPT, *ARGS]`` or ``[sys.executable, "-m", MODULE, *ARGS]``, run in a
    fork of the zygote."""
    global _zygote
    if os.environ.get("GAN_GA_TESTS_NO_ZYGOTE") or not hasattr(os, "fork"):
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if _zygote is None or _zygote.process.poll() is not None:
        _zygote = _Zygote()
        atexit.register(_zygote.close)
    return _zygote.run(argv, cwd, env, timeout)
