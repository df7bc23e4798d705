"""The browser demo's server: images for prompts, the same bytes for the same seed, clear 4xx,
a bounded queue (503 when full, work of departed clients dropped), a /healthz that stays quick and
names no local path, and a warning when it listens beyond this machine."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

import browser
from conftest import ROOT, run_script

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def client(trained_run):
    from fastapi.testclient import TestClient

    from lightning_modules.demo import DemoModel, create_app

    model = DemoModel(trained_run / "checkpoints" / "last.ckpt")
    with TestClient(create_app(model)) as test_client:
        yield test_client, model


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


@pytest.mark.integration
@pytest.mark.parametrize("n, columns, rows", [(1, 1, 1), (3, 3, 1), (8, 4, 2), (5, 4, 2)])
def test_a_prompt_gives_a_png_grid_of_n_images_four_to_a_row(client, n, columns, rows):
    test_client, model = client
    image = _png(test_client.get("/api/generate", params={"prompt": "a red circle", "n": n, "seed": 5}))
    side = model.image_size * model.scale
    assert image.size == (columns * side, rows * side)
    if n % columns:  # the empty cells of the last row are white
        assert image.convert("RGB").getpixel((columns * side - 1, rows * side - 1)) == (255, 255, 255)


@pytest.mark.integration
def test_the_same_seed_gives_the_same_bytes_and_another_seed_others(client):
    test_client, _ = client

    def get(seed):
        return test_client.get("/api/generate", params={"prompt": "a blue square", "n": 2, "seed": seed})

    assert get(7).content == get(7).content
    assert get(7).content != get(8).content


@pytest.mark.integration
def test_concurrent_requests_are_served_and_agree(client):
    test_client, _ = client
    params = {"prompt": "a green star at the top", "n": 2, "seed": 3}
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: test_client.get("/api/generate", params=params), range(4)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.content for r in responses}) == 1


@pytest.mark.integration
@pytest.mark.parametrize("params, message", [
    ({"prompt": "   "}, "prompt is empty"),
    ({}, "prompt is empty"),
    ({"prompt": "x" * 301}, "at most 300"),
    ({"prompt": "a red circle", "n": 0}, "n=0 is out of range: 1 to 16"),
    ({"prompt": "a red circle", "n": 17}, "n=17 is out of range"),
    ({"prompt": "a red circle", "n": "four"}, "n must be a whole number, got 'four'"),
    ({"prompt": "a red circle", "seed": "abc"}, "seed must be a whole number, got 'abc'"),
    ({"prompt": "a red circle", "seed": -1}, "seed=-1 is out of range"),
    ({"prompt": "a red circle", "truncation": "big"}, "truncation must be a number"),
    ({"prompt": " ".join(["word"] * 60)}, "more than the encoder's"),
])
def test_bad_input_is_a_4xx_with_its_message(client, params, message):
    test_client, _ = client
    response = test_client.get("/api/generate", params=params)
    assert 400 <= response.status_code < 500
    assert message in response.json()["detail"]


@pytest.mark.integration
def test_interpolation_strip_and_health(client):
    test_client, model = client
    image = _png(test_client.get("/api/interpolate", params={"a": "a red circle", "b": "a blue star", "steps": 4}))
    assert image.size == (4 * model.image_size * model.scale, model.image_size * model.scale)
    assert test_client.get("/api/interpolate", params={"a": "a red circle", "b": ""}).status_code == 400
    health = test_client.get("/healthz").json()
    assert health["status"] == "ok" and health["image_size"] == model.image_size


@pytest.mark.integration
def test_healthz_names_the_model_by_its_file_name_never_a_local_path(client, trained_run):
    test_client, _ = client
    response = test_client.get("/healthz")
    health = response.json()
    assert health["model"] == "last.ckpt"
    assert str(trained_run) not in response.text and "/checkpoints/" not in response.text
    assert health["queue"]["limit"] == 8 and health["status"] == "ok"


def _get(url: str, timeout: float = 60) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Status, headers and body of a GET; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _health(url: str) -> dict:
    return json.loads(_get(url + "/healthz", timeout=5)[2])


def _until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


GENERATE = "/api/generate?prompt=a+red+circle&n=1"


@pytest.mark.integration
def test_a_burst_beyond_the_queue_is_refused_at_once_and_healthz_stays_quick(client):
    """While the model is busy (its lock held), a burst of more requests than FastAPI's 40 worker
    threads: max_queue of them wait, the rest get 503 + Retry-After at once, /healthz answers."""
    from lightning_modules.demo import serving

    _, model = client
    burst, limit = 48, 3
    with serving(model, max_queue=limit) as url, ThreadPoolExecutor(burst) as pool:
        with model.lock:
            futures = [pool.submit(_get, url + GENERATE) for _ in range(burst)]
            _until(lambda: sum(f.done() for f in futures) >= burst - limit, timeout=20)
            start = time.perf_counter()
            health = _health(url)
            healthz_s = time.perf_counter() - start
            waiting = [f for f in futures if not f.done()]
        answers = [f.result(timeout=60) for f in futures]
    assert healthz_s < 1.0
    assert health["queue"]["pending"] == limit and health["queue"]["refused"] == burst - limit
    assert len(waiting) == limit
    refused = [a for a in answers if a[0] == 503]
    assert len(refused) == burst - limit
    for _, headers, body in refused:
        assert int(headers["Retry-After"]) >= 1
        assert json.loads(body)["detail"].startswith("the demo is busy: 3 requests are waiting or running")
    for future in waiting:  # once the model is free, the queued ones are computed
        status, headers, _ = future.result()
        assert status == 200 and headers["content-type"] == "image/png"


@pytest.mark.integration
def test_a_request_whose_client_left_before_its_turn_is_not_computed(client):
    from lightning_modules.demo import serving

    _, model = client
    with serving(model, max_queue=4) as url, ThreadPoolExecutor(1) as pool:
        address = urllib.parse.urlsplit(url)
        with model.lock:
            first = pool.submit(_get, url + GENERATE)  # its turn comes first; it waits for the model
            _until(lambda: _health(url)["queue"]["pending"] == 1)
            gone = [http.client.HTTPConnection(address.hostname, address.port) for _ in range(2)]
            for connection in gone:
                connection.request("GET", GENERATE)
            _until(lambda: _health(url)["queue"]["pending"] == 3)
            for connection in gone:  # their clients give up while they wait
                connection.close()
            time.sleep(0.5)  # the server reads the closed connections while the model is still busy
        assert first.result(timeout=60)[0] == 200
        _until(lambda: _health(url)["queue"]["pending"] == 0)
        queue = _health(url)["queue"]
    assert (queue["served"], queue["dropped"], queue["refused"]) == (1, 2, 0)


@pytest.mark.integration
@pytest.mark.parametrize("value", [0, -1, "abc", 2.5, True])
def test_max_queue_must_be_a_positive_whole_number(client, value):
    from gan_ga_utils.errors import ConfigError
    from lightning_modules.demo import create_app

    with pytest.raises(ConfigError, match=rf"max_queue={value!r}: a whole number >= 1"):
        create_app(client[1], max_queue=value)


@pytest.mark.integration
def test_demo_py_refuses_a_bad_max_queue_in_one_line(tmp_path):
    result = run_script("demo.py", "max_queue=0", f"hydra.run.dir={tmp_path}/demo", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("gan-ga: max_queue=0: a whole number >= 1")


def test_only_a_non_loopback_host_is_warned_about():
    from lightning_modules.demo import exposure_warning, listening_socket

    hosts = ["127.0.0.1", "localhost", "0.0.0.0"] + (["::1"] if socket.has_ipv6 else [])
    for host in hosts:
        try:
            sock = listening_socket(host, 0)
        except Exception as err:  # noqa: BLE001 - an address this machine lacks (no IPv6 loopback)
            assert host == "::1", err
            continue
        with sock:
            warning = exposure_warning(host, sock)
            if host == "0.0.0.0":
                assert warning.startswith("host=0.0.0.0 serves the demo to other machines and it has no "
                                          "authentication")
                assert warning.endswith("host=127.0.0.1 keeps it local")
            else:
                assert warning is None, host


@pytest.mark.integration
def test_demo_py_on_all_addresses_warns_on_stderr(trained_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), f"ckpt_path={trained_run}/checkpoints/last.ckpt",
                                "host=0.0.0.0", "port=0", f"hydra.run.dir={tmp_path}/demo"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("gan-ga demo: ")  # serving: the model is loaded
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    warning = next((line for line in stderr.splitlines() if line.startswith("gan-ga: warning:")), "")
    assert warning.startswith("gan-ga: warning: host=0.0.0.0 serves the demo to other machines and it has no "
                              "authentication: anyone who can reach port ")
    assert warning.rstrip().endswith("host=127.0.0.1 keeps it local")


@pytest.mark.integration
def test_the_page_and_its_assets_are_served_by_the_demo(client):
    test_client, _ = client
    page = test_client.get("/")
    assert page.status_code == 200 and "<form" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text and test_client.get(asset).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the network
    assert test_client.get("/static/../demo.py").status_code == 404


@pytest.mark.integration
def test_demo_without_a_checkpoint_says_how_to_point_at_one(tmp_path):
    result = run_script("demo.py", f"hydra.run.dir={tmp_path}/demo", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line
    assert "no ckpt_path given" in result.stderr and "ckpt_path=RUN/checkpoints/last.ckpt" in result.stderr


def _runs_with_two_checkpoints(trained_run, runs):
    """RUNS/old and RUNS/new, each a copy of the trained run's last.ckpt, new written later."""
    for name, mtime in (("new", 2_000_000_000), ("old", 1_000_000_000)):
        ckpt = runs / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        shutil.copyfile(trained_run / "checkpoints" / "last.ckpt", ckpt)
        os.utime(ckpt, (mtime, mtime))
    return runs / "new" / "checkpoints" / "last.ckpt"


def test_newest_checkpoint_is_the_last_written_last_ckpt(tmp_path):
    from lightning_modules.demo import newest_checkpoint

    assert newest_checkpoint(tmp_path / "absent") is None
    assert newest_checkpoint(tmp_path) is None
    for name, mtime in (("b", 300), ("a", 200), ("c", 100)):
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"x")
        os.utime(ckpt, (mtime, mtime))
    (tmp_path / "d" / "checkpoints").mkdir(parents=True)
    (tmp_path / "d" / "checkpoints" / "best.ckpt").write_bytes(b"x")  # only last.ckpt counts
    assert newest_checkpoint(tmp_path) == tmp_path / "b" / "checkpoints" / "last.ckpt"


@pytest.mark.integration
def test_demo_py_without_ckpt_path_serves_the_newest_run_on_the_port_it_prints(trained_run, tmp_path):
    newest = _runs_with_two_checkpoints(trained_run, tmp_path / "runs")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, str(ROOT / "demo.py"), f"runs_dir={tmp_path / 'runs'}", "port=0",
                                f"hydra.run.dir={tmp_path}/demo"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "gan-ga demo: CKPT on http://127.0.0.1:PORT", once the model is loaded
        assert line.startswith(f"gan-ga demo: {newest} on http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split(" on ")[-1].strip()
        with urllib.request.urlopen(url + "/healthz", timeout=60) as response:
            health = response.read().decode()
        assert json.loads(health)["model"] == "last.ckpt" and str(tmp_path) not in health
        with urllib.request.urlopen(url + "/api/generate?prompt=a+red+circle&n=2", timeout=60) as response:
            assert response.headers["content-type"] == "image/png"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "gan-ga: warning" not in stderr  # 127.0.0.1: nothing to warn about


@pytest.mark.integration
def test_a_busy_or_bad_port_is_a_one_line_error(trained_run, tmp_path):
    from gan_ga_utils.errors import GenerationError
    from lightning_modules.demo import listening_socket

    for port, message in (("abc", "port='abc': a whole number from 0 to 65535"), (70000, "port=70000")):
        with pytest.raises(GenerationError, match=message):
            listening_socket("127.0.0.1", port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_script("demo.py", f"ckpt_path={trained_run}/checkpoints/last.ckpt", f"port={port}",
                            f"hydra.run.dir={tmp_path}/demo", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"gan-ga: host=127.0.0.1 port={port}: cannot listen there (Address already in "
                                     "use); pass another port=... (port=0: any free one)")


@pytest.mark.integration
def test_in_a_real_browser_a_typed_prompt_gives_loaded_images_and_bad_input_a_message(client):
    """Headless Chromium against the demo served by uvicorn on a free port: type, click, see."""
    reason = browser.missing()
    if reason:
        pytest.skip(f"no headless Chromium: {reason}")
    from lightning_modules.demo import serving

    _, model = client
    side = model.image_size * model.scale
    with serving(model) as url, browser.chromium() as driver:
        shown = browser.generate_on_page(driver, url, "a large red circle in the center", n=8, seed=1)
        assert shown == {"width": 4 * side, "height": 2 * side, "error": ""}
        assert driver.execute_script("return document.getElementById('status').textContent").endswith(" s")
        for fields, message in (({"seed": "abc"}, "seed must be a whole number, got 'abc'"),
                                ({"n": "40"}, "n=40 is out of range: 1 to 16")):
            shown = browser.generate_on_page(driver, url, "a red circle", **fields)
            assert shown["error"] == message
        assert browser.generate_on_page(driver, url, "   ")["error"].startswith("prompt is empty")
