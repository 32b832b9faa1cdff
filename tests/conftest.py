"""Shared fixtures. Each test area keeps its own helpers in its own files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """``../shared/reference`` beside the repo (CI has it); skip where it is absent."""
    ref = SHARED / "reference"
    if not ref.is_dir():
        pytest.skip(f"reference data not found at {ref} (../shared/reference beside the repo)")
    return ref


def run_gbuf(*args, check: bool = False, timeout: float = 600, env: dict | None = None, cwd=None):
    """Run the real CLI (``python -m gbuf ...``) in a subprocess; returns CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gbuf", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"gbuf {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def gbuf_cli():
    return run_gbuf
