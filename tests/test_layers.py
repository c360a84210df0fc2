"""The import contract (.importlinter) holds for the code as it is, and bites: an
upward or sideways import, even one hidden inside a function body, breaks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the app and the contract, to break without touching the real one."""
    shutil.copytree(ROOT / "alerts", tmp_path / "alerts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text() + "\n\n" + code + "\n")


def test_the_code_keeps_the_import_contract(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tree):
    _append(tree / "alerts/sending/batches.py",
            "def _upward() -> None:\n    from ..tasks import send_batch  # noqa: F401")
    result = _lint(tree)
    assert result.returncode != 0
    assert "alerts.sending is not allowed to import alerts.tasks" in result.stdout


def test_a_capability_importing_its_sibling_breaks_the_contract(tree):
    _append(tree / "alerts/digests/send.py", "from ..publishing import fanout  # noqa: F401")
    result = _lint(tree)
    assert result.returncode != 0
    assert "alerts.digests is not allowed to import alerts.publishing" in result.stdout


def test_common_importing_a_capability_breaks_the_contract(tree):
    _append(tree / "alerts/common/queueing.py", "from ..signup import services  # noqa: F401")
    result = _lint(tree)
    assert result.returncode != 0
    assert "alerts.common is not allowed to import alerts.signup" in result.stdout
