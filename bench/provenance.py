"""Where a result came from: code version, packages, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

PACKAGES = ("genrec-bench", "torch", "numpy", "scipy", "pandas", "scikit-learn", "transformers", "sentence-transformers",
            "recbole", "k-means-constrained", "ortools", "peft")  # fmt: skip
REPO = Path(__file__).resolve().parent.parent


def git_info() -> dict:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        sha = git("rev-parse", "HEAD")
        # results/ and leaderboard.md change as a run writes them; they do not make the code dirty
        dirty = bool(git("status", "--porcelain", "--", ".", ":(exclude)results", ":(exclude)leaderboard.md"))
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
    return {"git_sha": sha or None, "git_dirty": dirty if sha else None}


@functools.cache
def loaded_code_version() -> dict:
    """:func:`git_info` taken once per process, at its first run: the code a process runs is what
    it imported when it started, so a process that trains several runs one after another (the
    command line without ``--jobs``) names that version in every record, even if the tree moves
    on meanwhile.  A ``--jobs``/cluster worker is a fresh process per run."""
    return git_info()


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    info["device_name"] = info.get("gpu") or f"CPU ({info['cpu']}, {info['torch_threads']} threads)"
    return info


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
