"""A real TensorBoard server over runs both implementations wrote serves exactly the logged values.

This is what a user does after training (``tensorboard --logdir runs``): the test starts the server on a free
loopback port, asks its HTTP API for each run's ``train/loss`` and ``val/acc`` the way the browser does, checks
them against the event files and stops the server.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from trainutil import ROOT, SYNTH_SMALL, scalars

TAGS = ("train/loss", "val/acc")
RUNS = ("synth/manual/version_0", "synth/lightning/version_0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(base: str, path: str, **query):
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return json.loads(response.read())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """Both implementations train the same small synthetic run into one log directory, side by side."""
    log_dir = tmp_path_factory.mktemp("tb")
    procs = [subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--impl", impl, *SYNTH_SMALL,
                               "--experiment", "synth", "--log-dir", str(log_dir), "--no-progress"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for impl in ("manual", "lightning")]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
    for run in RUNS:
        assert (log_dir / run).is_dir()
    return log_dir


def stop(proc: subprocess.Popen) -> str:
    """Stop the server as Ctrl-C would (SIGTERM), killing it if it hangs; return what it printed."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def serving(proc: subprocess.Popen, base: str, timeout: float = 90) -> bool:
    """Wait until the server lists both runs with the tags we ask for (it loads event files in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            tags = get_json(base, "/data/plugin/scalars/tags")
            if all(run in tags and set(TAGS) <= set(tags[run]) for run in RUNS):
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def server(logdir):
    """``tensorboard --logdir <logdir>`` on a free 127.0.0.1 port; yields its base URL, then stops it."""
    for _ in range(3):  # another process may take the port between our probe and the server's bind
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(port), "--reload_interval", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        if serving(proc, base):
            break
        out = stop(proc)
        if "in use" not in out:
            pytest.fail(f"TensorBoard did not serve both runs within 90 s (exit {proc.returncode}):\n{out}")
    else:
        pytest.fail("TensorBoard found no free port in three tries")
    try:
        yield base
    finally:
        stop(proc)
    with pytest.raises(OSError):  # stopped: the port no longer answers
        get_json(base, "/data/plugin/scalars/tags")


def test_tags_list_both_runs(server):
    tags = get_json(server, "/data/plugin/scalars/tags")
    for run in RUNS:
        assert {"train/loss", "train/loss_epoch", "val/loss", "val/acc"} <= set(tags[run]), tags[run]


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("run", RUNS)
def test_served_values_equal_the_event_files(server, logdir, run, tag):
    served = get_json(server, "/data/plugin/scalars/scalars", run=run, tag=tag)
    on_disk = scalars(logdir / run)[tag]
    assert len(served) == len(on_disk) > 0
    # Each point is [wall_time, step, value]; both readers give the float32 the writer stored, exactly.
    assert [(step, value) for _, step, value in served] == on_disk
