"""Nothing lost: real signals on a real batch, a full disk and a read-only folder."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vaecodec

from .conftest import run_cli

# Enough photos that the batch is still running when the signal lands: on a fast machine ten of
# them took 0.7 s after the first file appeared, which a busy moment of the test could miss.
COUNT = 24


@pytest.fixture()
def photos(tmp_path, kodim23):
    """COUNT different 256 x 192 PNGs and their hashes."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(COUNT):
        piece = kodim23[13 * i:13 * i + 192, 20 * i:20 * i + 256]
        Image.fromarray(np.ascontiguousarray(piece)).save(folder / f"p{i}.png")
    return sorted(folder.iterdir())


def digests(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def default_sigint():
    # A test run started in the background (`pytest &` from a script) inherits SIGINT ignored,
    # and so would the CLI, which then rightly finishes its batch; the test wants a terminal's.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "vaecodec.cli", *map(str, args), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)


def wait_for_outputs(folder: Path, suffix: str, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if folder.is_dir() and any(p.suffix == suffix for p in folder.iterdir()):
            return
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.02)
    raise AssertionError("no output appeared")


def leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_batch_keeps_finished_files_and_resumes(tmp_path, photos, number):
    before = digests(photos)
    out = tmp_path / "out"
    process = start("compress", *photos, "-d", out)
    wait_for_outputs(out, ".vae", process)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143,
                                  signal.SIGKILL: -signal.SIGKILL}[number]
    if number != signal.SIGKILL:
        assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
        assert leftovers(out) == []
    finished = sorted(p for p in out.iterdir() if p.suffix == ".vae")
    assert 1 <= len(finished) < COUNT            # stopped mid-run
    for path in finished:                        # every finished file is whole
        assert vaecodec.decompress(path.read_bytes()).size == (256, 192)
    kept = digests(finished)
    assert digests(photos) == before             # inputs untouched

    # Running the same command again finishes the batch and leaves the done files alone.
    result = run_cli("compress", *photos, "-d", out)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("exists, skipped") == len(finished)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.vae" for i in range(COUNT))
    assert {k: v for k, v in digests(out.iterdir()).items() if k in kept} == kept


def test_interrupted_decompress_batch(tmp_path, photos):
    encoded = tmp_path / "vae"
    assert run_cli("compress", *photos, "-d", encoded, "--quality", "2").returncode == 0
    out = tmp_path / "back"
    process = start("decompress", *sorted(encoded.iterdir()), "-d", out)
    wait_for_outputs(out, ".png", process)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    assert leftovers(out) == []
    for path in out.iterdir():
        assert Image.open(path).size == (256, 192)
        Image.open(path).load()


def test_stale_temporary_of_a_killed_writer_is_removed(tmp_path, photos):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".p0.vae.{dead}.abc123.partial"
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".p0.vae.{os.getpid()}.abc123.partial"   # a writer still running
    alive.write_bytes(b"in progress")
    assert run_cli("compress", photos[0], "-d", tmp_path).returncode == 0
    assert not stale.exists() and alive.exists()


@pytest.fixture()
def small_disk(tmp_path):
    """A 16 KiB tmpfs (needs permission to mount; skipped without it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)],
            capture_output=True).returncode:
        pytest.skip("cannot mount a small file system here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_gives_a_clear_error_and_no_partial_file(tmp_path, photos, small_disk):
    # A decoded 256 x 192 PNG is larger than 16 KiB, so the write runs out of space.
    encoded = tmp_path / "p0.vae"
    assert run_cli("compress", photos[0], "-o", encoded, "--quality", "8").returncode == 0
    result = run_cli("decompress", encoded, "-o", small_disk / "back.png")
    assert result.returncode == 1 and "No space left" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(small_disk.iterdir()) == []


def test_read_only_folder_gives_a_clear_error(tmp_path, photos, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result = run_cli("compress", photos[0], "-d", small_disk)
    assert result.returncode == 1 and "Read-only file system" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(small_disk.iterdir()) == []
