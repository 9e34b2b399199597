"""The examples in the docstrings are run: documentation that cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["tying", "tying.hard", "tying.names", "tying.footprint", "tying.checkpoint",
           "tying.materialize", "tying.models.transformer", "tying.experiments"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_readme_python_examples_run(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)  # the examples write files
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "lm.safetensors").exists()
