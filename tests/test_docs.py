"""The examples in the docstrings are run: documentation that cannot drift from the code."""

from __future__ import annotations

import doctest
import importlib

import pytest


def _modules_with_examples() -> list[str]:
    """Every module of the package whose source holds a docstring example that is not skipped
    (found, not listed: a new module's examples run without anyone adding it here)."""
    import importlib.util
    import pkgutil
    from pathlib import Path

    import tying

    names = ["tying"] + [m.name for m in pkgutil.walk_packages(tying.__path__, "tying.")
                         if not m.name.endswith("__main__")]
    found = []
    for name in names:
        lines = Path(importlib.util.find_spec(name).origin).read_text().splitlines()
        if any(">>> " in line and "+SKIP" not in line for line in lines):
            found.append(name)
    return found


MODULES = _modules_with_examples()


def test_the_core_modules_have_examples():
    for name in ("tying", "tying.hard", "tying.soft", "tying.mixture", "tying.nn.time_delay",
                 "tying.models.tdnn", "tying.speech.hmm"):
        assert name in MODULES, f"{name} lost its docstring examples"


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has '>>> ' in its source but doctest found no example"
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
