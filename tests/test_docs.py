"""The README's Python examples run as written, and the extension's stub matches the module."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_example_runs(index):
    code = python_blocks()[index]
    if "halffull.engine" in code:
        pytest.importorskip("torch", reason="the engine example needs the 'engine' extra (torch)")
    exec(compile(code, f"README.md[python block {index}]", "exec"), {})


def test_stub_matches_the_extension():
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "halffull._core"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
