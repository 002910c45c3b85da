"""The distribution installs one import package, ``spectrace``, and its tracer works without JAX.

``tracer/`` and ``engines/`` stay at the top of the repository; pyproject.toml maps them to
``spectrace.tracer`` and ``spectrace.engines`` (``spectrace`` is a namespace package). These
tests build the real wheel, look inside it, and install it into a fresh virtual environment
that has no JAX, as a platform team would before putting it next to their serving stack.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (whl,) = out.glob("spectrace-*.whl")
    return whl


def test_the_wheel_has_one_top_level_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"spectrace"}
    assert len([t for t in tops if t.endswith(".dist-info")]) == 1
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["spectrace"]


def test_every_module_of_the_tree_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("tracer", "engines"):
        for f in (ROOT / folder).rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".txt"):
                rel = f.relative_to(ROOT).as_posix()
                assert f"spectrace/{rel}" in names, f"{rel} is not in the wheel: add its package to pyproject.toml"


def test_the_wheel_has_the_compiled_span_path(wheel):
    # tracer/_speedups.c (optional in pyproject.toml, so a machine without a compiler still
    # installs); this machine and CI have one, so a wheel without it is a build that broke.
    names = zipfile.ZipFile(wheel).namelist()
    built = [n for n in names if n.startswith("spectrace/tracer/_speedups.")
             and n.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))]
    assert len(built) == 1, [n for n in names if "_speedups" in n]
    assert not any(n.endswith((".c", ".h")) for n in names)  # sources go to the sdist, not the wheel


def test_entry_points_name_the_namespaced_modules(wheel):
    z = zipfile.ZipFile(wheel)
    (ep,) = [n for n in z.namelist() if n.endswith("entry_points.txt")]
    text = z.read(ep).decode()
    assert re.search(r"^spectrace = spectrace\.tracer\.cli:main$", text, re.M), text
    assert re.search(r"^spectrace = spectrace\.tracer\.testing\.plugin$", text, re.M), text


def test_a_fresh_venv_imports_the_tracer_without_jax_and_runs_the_command(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    code = ("import importlib.util, sys\n"
            "from spectrace import tracer\n"
            "import spectrace.tracer.testing\n"
            "with tracer.span('s'):\n"
            "    pass\n"
            "from spectrace.tracer import _accel\n"
            "assert _accel.ACCELERATED, 'the installed wheel runs the pure-Python span path'\n"
            "assert importlib.util.find_spec('jax') is None, 'jax is installed in the fresh venv'\n"
            "assert 'jax' not in sys.modules\n"
            "for name in ('tracer', 'engines'):\n"
            "    assert importlib.util.find_spec(name) is None, name + ' is importable at the top level'\n"
            "print('ok')\n")
    # Without SPECTRACE_PURE_PYTHON (the suite may run under it): the wheel's C path must import.
    env = {k: v for k, v in os.environ.items() if k != "SPECTRACE_PURE_PYTHON"}
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
    r = subprocess.run([str(env_dir / "bin" / "spectrace"), "--help"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run" in r.stdout and "report" in r.stdout
    # The JAX-free commands work there; the model commands say what to install, in one line.
    r = subprocess.run([str(env_dir / "bin" / "spectrace"), "run"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        "spectrace run: needs the JAX engines, which are not installed (no module 'jax'): "
        "pip install 'spectrace[engines]'"]


def test_nothing_in_the_repository_imports_top_level_tracer_or_engines():
    pattern = re.compile(r"^\s*(from|import)\s+(tracer|engines)\b", re.M)
    offenders = []
    for f in ROOT.rglob("*.py"):
        if any(p in f.parts for p in (".git", "build", "__pycache__", ".venv")):
            continue
        if pattern.search(f.read_text(encoding="utf-8", errors="replace")):
            offenders.append(str(f.relative_to(ROOT)))
    assert offenders == []
