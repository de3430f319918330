"""The README's line per framework is what that framework's test runs, verbatim.

Each framework's section of the README shows the lines to add (the adapter call,
``report_to="none"``, ``asyncsummary.patch()``) and names its test module. Every such
call in the section's code must appear, character for character, in that module, so
that a line a user copies is one the suite trains a real model with: an edit to either
side that breaks the match fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {
    "PyTorch Lightning": "tests/test_frameworks_lightning.py",
    "Hugging Face `Trainer`": "tests/test_frameworks_huggingface.py",
    "accelerate": "tests/test_frameworks_accelerate.py",
    "ignite": "tests/test_frameworks_ignite.py",
}
#: What a user adds: a call of an adapter (its arguments have no parentheses), the
#: HF argument that keeps the stock callback out.
_ADDED = re.compile(r"\bAsync\w+\([^()]*\)|report_to=\"none\"")


def _section(readme: str, title: str) -> str:
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##)", readme, re.M | re.S)
    assert match, f"README has no section '### {title}'"
    return match.group(1)


def _code(section: str) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


@pytest.mark.parametrize("title", sorted(SECTIONS))
def test_readme_lines_are_what_the_framework_test_runs(title):
    section = _section((ROOT / "README.md").read_text(), title)
    test_module = SECTIONS[title]
    assert f"`{test_module}`" in section, f"the section does not name {test_module}"
    added = _ADDED.findall(_code(section))
    assert added, f"no adapter line in the README's {title} section"
    source = (ROOT / test_module).read_text()
    missing = [line for line in added if line not in source]
    assert not missing, f"{test_module} does not run the README's {missing}"
    # patch() is each framework's other route: the README says so, the test runs it.
    assert "asyncsummary.patch()" in section and "with asyncsummary.patch():" in source
