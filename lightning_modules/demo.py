"""``demo.py``'s work: a local web page and HTTP API that turn prompts into images.

The model is loaded once (:class:`DemoModel`, a checkpoint or an export folder, through
``loading.load_module``); requests are answered by FastAPI, one generation at a time (the networks
are shared, and a CPU is busiest with one batch at a time). Generation requests wait their turn in a
bounded queue (:class:`WorkQueue`): at most ``max_queue`` waiting or running, more are refused at
once with 503 and ``Retry-After``, and one whose client left before its turn is dropped, not computed.
The model runs in a worker thread, so the event loop stays free for ``/healthz`` and for refusing.
Everything the page needs is served by the demo itself (``demo_page/``): no CDN, no web fonts, works
offline. It has no authentication: :func:`serve` warns when it listens beyond this machine.

API (every image is a PNG; bad input is a 4xx whose JSON ``detail`` says what is wrong):

    GET /api/generate?prompt=...&n=4&seed=0[&truncation=1.0]    n images of one prompt, 4 to a row
    GET /api/interpolate?a=...&b=...&steps=6&seed=0             text embedding a -> b, fixed noise
    GET /healthz                                                 {"status": "ok", "queue": {...}, ...}

A full queue is a 503 with ``Retry-After`` (seconds) and a JSON ``detail`` saying the demo is busy.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import math
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request  # module level: FastAPI resolves the handlers' annotations here

from gan_ga_utils.errors import ConfigError, GenerationError
from lightning_modules.components.text_encoders import TextFeatures
from lightning_modules.loading import load_module
from lightning_modules.sampling import sample_noise, side_by_side, to_uint8

MAX_PROMPT_CHARS = 300
MAX_IMAGES = 16
MAX_STEPS = 12
MAX_SEED = 2**31 - 1
GRID_COLUMNS = 4
DEFAULT_MAX_QUEUE = 8
PAGE = files("lightning_modules") / "demo_page"


class BadRequest(ValueError):
    """A request the demo refuses; the message is shown on the page and returned with a 4xx."""


class Busy(RuntimeError):
    """The queue is full: answered at once with 503 and ``Retry-After: retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def parse_prompt(value: str | None, name: str = "prompt") -> str:
    text = " ".join((value or "").split())
    if not text:
        raise BadRequest(f"{name} is empty: type what the image should show")
    if len(text) > MAX_PROMPT_CHARS:
        raise BadRequest(f"{name} is {len(text)} characters long; at most {MAX_PROMPT_CHARS}")
    return text


def parse_int(value: str | None, name: str, low: int, high: int, default: int) -> int:
    if value is None or str(value).strip() == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise BadRequest(f"{name}={number} is out of range: {low} to {high}")
    return number


def parse_truncation(value: str | None) -> float | None:
    if value is None or str(value).strip() in ("", "none", "null"):
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise BadRequest(f"truncation must be a number (e.g. 1.0) or empty, got {value!r}") from None
    if not 0 < number <= 4:
        raise BadRequest(f"truncation={number} is out of range: above 0 and at most 4 (empty: none)")
    return number


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    """[N, H, W, 3] uint8 -> one [rows*H, columns*W, 3] picture, row-major; empty cells are white."""
    n, height, width = images.shape[:3]
    rows = math.ceil(n / columns)
    picture = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        row, column = divmod(i, columns)
        picture[row * height:(row + 1) * height, column * width:(column + 1) * width] = image
    return picture


def check_max_queue(value) -> int:
    """``max_queue``: how many generation requests may wait or run at once (more get 503)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_queue={value!r}: a whole number >= 1 (generation requests waiting or running "
                          "at once; more are answered 503 busy)")
    return value


class DemoModel:
    """The EMA generator of one checkpoint or export, loaded once, one generation at a time."""

    def __init__(self, ckpt_path: str | Path, device: str = "cpu", scale: int | None = None):
        self.ckpt_path = str(ckpt_path)
        self.name = Path(ckpt_path).name  # what /healthz shows: a file or folder name, never a local path
        self.module = load_module(ckpt_path, device)
        self.batches_trained = int(self.module.batches_seen)  # read once: on a GPU busy generating it would wait
        self.lock = threading.Lock()
        size = int(self.module.run_config["data"]["image_size"])
        self.image_size = size
        self.scale = scale or max(1, 128 // size)  # small images are shown enlarged (nearest neighbour)

    def _check_tokens(self, prompt: str, name: str) -> None:
        limit = int(self.module.encoder.max_length)
        if self.module.encoder.num_tokens(prompt) > limit:
            raise BadRequest(f"{name} has more than the encoder's {limit} tokens; shorten it")

    def _png(self, picture: np.ndarray) -> bytes:
        if self.scale > 1:
            picture = picture.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        return png_bytes(picture)

    @torch.no_grad()
    def generate(self, prompt: str, n: int, seed: int, truncation: float | None = None) -> bytes:
        """``n`` images of ``prompt`` in a grid of at most :data:`GRID_COLUMNS` columns."""
        z = sample_noise(n, self.module.z_dim, seed=seed, truncation=truncation)
        with self.lock:  # the tokenizer too: a fast tokenizer refuses to be used by two threads at once
            self._check_tokens(prompt, "prompt")
            images = self.module.sample([prompt], z)
        return self._png(grid(to_uint8(images), min(n, GRID_COLUMNS)))

    @torch.no_grad()
    def interpolate(self, a: str, b: str, steps: int, seed: int) -> bytes:
        """``steps`` images from prompt ``a`` to ``b``: the text features are blended linearly
        (tokens over the union of both masks), the noise is the same for every image."""
        with self.lock:
            self._check_tokens(a, "a")
            self._check_tokens(b, "b")
            text = self.module.encode([a, b])
            length = text.tokens.shape[1]
            first, last = text.index(slice(0, 1)).padded(length), text.index(slice(1, 2)).padded(length)
            w = torch.linspace(0, 1, steps, device=text.tokens.device).view(-1, 1)
            blend = TextFeatures(tokens=torch.lerp(first.tokens, last.tokens, w.view(-1, 1, 1)),
                                 mask=(first.mask | last.mask).expand(steps, -1),
                                 pooled=torch.lerp(first.pooled, last.pooled, w))
            z = sample_noise(1, self.module.z_dim, seed=seed).repeat(steps, 1)
            images = self.module.generate_ema(z, blend)
        return self._png(side_by_side(to_uint8(images)))


@dataclass
class WorkQueue:
    """The generation requests of one app: at most ``limit`` waiting or running, computed one at a
    time (in arrival order) in a worker thread. Used from the app's event loop only."""

    limit: int = DEFAULT_MAX_QUEUE
    pending: int = 0  # admitted: waiting for their turn or running
    served: int = 0
    dropped: int = 0  # the client left before its turn: not computed
    refused: int = 0  # the queue was full: 503
    last_s: float = 0.0  # how long the last one took, for Retry-After
    turn: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    def __post_init__(self):
        check_max_queue(self.limit)

    def counts(self) -> dict:
        return {"limit": self.limit, "pending": self.pending, "served": self.served, "dropped": self.dropped,
                "refused": self.refused}

    async def run(self, request: Request, work: Callable[[], bytes]) -> bytes | None:
        """``work()`` in a worker thread when its turn comes; None if the client has gone by then.
        Raises :class:`Busy` at once when ``limit`` requests are already waiting or running."""
        if self.pending >= self.limit:
            self.refused += 1
            wait_s = max(1, math.ceil(self.pending * self.last_s))
            raise Busy(f"the demo is busy: {self.pending} requests are waiting or running (max_queue="
                       f"{self.limit}); try again in {wait_s} s", wait_s)
        self.pending += 1
        try:
            async with self.turn:
                if await request.is_disconnected():
                    self.dropped += 1
                    return None
                start = time.perf_counter()
                result = await run_in_threadpool(work)
                self.last_s = time.perf_counter() - start
                self.served += 1
                return result
        finally:
            self.pending -= 1


def create_app(model: DemoModel, max_queue: int = DEFAULT_MAX_QUEUE):
    """The FastAPI application serving ``model``, with at most ``max_queue`` generation requests
    waiting or running (see :class:`WorkQueue`)."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse, Response

    queue = WorkQueue(max_queue)
    app = FastAPI(title="gan-ga demo", docs_url=None, redoc_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest):  # noqa: ARG001
        return JSONResponse(status_code=400, content={"detail": str(err)})

    @app.exception_handler(Busy)
    async def busy(request: Request, err: Busy):  # noqa: ARG001
        return JSONResponse(status_code=503, content={"detail": str(err)},
                            headers={"Retry-After": str(err.retry_after_s), "Cache-Control": "no-store"})

    def image(data: bytes | None) -> Response:
        if data is None:  # the client has gone: nobody reads this
            return Response(status_code=499)
        return Response(content=data, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.get("/")
    def page():
        return FileResponse(str(PAGE / "index.html"), media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str):
        kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        path = PAGE / name
        suffix = Path(name).suffix
        if "/" in name or suffix not in kinds or not path.is_file():
            return JSONResponse(status_code=404, content={"detail": f"no such file: {name}"})
        return FileResponse(str(path), media_type=kinds[suffix])

    # async and lock-free: answered on the event loop at once, however full the queue
    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": model.name, "image_size": model.image_size,
                "batches_trained": model.batches_trained, "queue": queue.counts()}

    # the query is checked on the event loop before it queues; the model runs in a worker thread
    @app.get("/api/generate")
    async def generate(request: Request, prompt: str | None = None, n: str | None = None, seed: str | None = None,
                       truncation: str | None = None):
        args = (parse_prompt(prompt), parse_int(n, "n", 1, MAX_IMAGES, 4), parse_int(seed, "seed", 0, MAX_SEED, 0),
                parse_truncation(truncation))
        return image(await queue.run(request, lambda: model.generate(*args)))

    @app.get("/api/interpolate")
    async def interpolate(request: Request, a: str | None = None, b: str | None = None, steps: str | None = None,
                          seed: str | None = None):
        args = (parse_prompt(a, "a"), parse_prompt(b, "b"), parse_int(steps, "steps", 2, MAX_STEPS, 6),
                parse_int(seed, "seed", 0, MAX_SEED, 0))
        return image(await queue.run(request, lambda: model.interpolate(*args)))

    return app


def newest_checkpoint(runs: Path) -> Path | None:
    """The most recently written ``RUNS/*/checkpoints/last.ckpt``, or None."""
    found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    return found[-1] if found else None


def listening_socket(host: str, port) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free one), or a one-line error naming both.
    Connections made before the server runs wait in its queue."""
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise GenerationError(f"port={port!r}: a whole number from 0 to 65535 (0: any free port)") from None
    if not 0 <= number <= 65535:
        raise GenerationError(f"port={number}: a whole number from 0 to 65535 (0: any free port)")
    try:
        address = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise GenerationError(f"host={host!r}: not an address of this machine ({err.strerror})") from None
    sock = socket.socket(address[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address[4])
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise GenerationError(f"host={host} port={number}: cannot listen there ({err.strerror}); "
                              "pass another port=... (port=0: any free one)") from None
    return sock


def exposure_warning(host: str, sock: socket.socket) -> str | None:
    """What to tell the user when ``sock`` listens beyond this machine (0.0.0.0, a LAN address);
    None on a loopback address."""
    address, port = sock.getsockname()[:2]
    if ipaddress.ip_address(address.split("%")[0]).is_loopback:
        return None
    return (f"host={host} serves the demo to other machines and it has no authentication: anyone who can "
            f"reach port {port} can use the model and this machine's CPU/GPU; host=127.0.0.1 keeps it local")


def warn_if_exposed(host: str, sock: socket.socket) -> None:
    warning = exposure_warning(host, sock)
    if warning:
        print(f"gan-ga: warning: {warning}", file=sys.stderr, flush=True)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))


@contextmanager
def serving(model: DemoModel, host: str = "127.0.0.1", port: int = 0,
            max_queue: int = DEFAULT_MAX_QUEUE) -> Iterator[str]:
    """The demo served by uvicorn in a background thread while the block runs; yields its URL
    (tests, benchmarks). ``demo.py`` serves in the foreground instead (:func:`serve`)."""
    app = create_app(model, max_queue)
    sock = listening_socket(host, port)
    warn_if_exposed(host, sock)
    server = _server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="gan-ga-demo")
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the demo server stopped while starting")
            time.sleep(0.02)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(cfg) -> None:
    """demo.py's work: load the model, then serve until interrupted."""
    max_queue = check_max_queue(cfg.get("max_queue", DEFAULT_MAX_QUEUE))
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        runs = Path(str(cfg.runs_dir))
        ckpt = newest_checkpoint(runs)
        if ckpt is None:
            raise GenerationError(f"no ckpt_path given and no {runs}/*/checkpoints/last.ckpt: train one (python "
                                  "train.py) or pass ckpt_path=RUN/checkpoints/last.ckpt (or an export folder)")
    sock = listening_socket(str(cfg.host), cfg.port)  # before the model loads: a busy port fails at once
    warn_if_exposed(str(cfg.host), sock)
    try:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else str(cfg.device)
        model = DemoModel(ckpt, device)
        print(f"gan-ga demo: {ckpt} on {url_of(sock)}", flush=True)
        _server(create_app(model, max_queue)).run(sockets=[sock])
    finally:
        sock.close()
