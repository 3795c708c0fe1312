"""The layers of README's architecture section, enforced: imports point down only (import-linter)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is not installed (pip install -e '.[test]')"
    out = subprocess.run([lint, "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_each_method_and_selection_rule_is_declared_once_and_every_table_agrees():
    """method_names holds the names; the config accepts exactly them, and each method has its class."""
    import typing

    from fedmkt.config import FedMKTSpec
    from fedmkt.federation.methods import CLASSES
    from fedmkt.method_names import METHODS, SELECTION_RULES
    from fedmkt.selection import select_sources
    import numpy as np

    assert set(CLASSES) == set(METHODS)
    assert set(typing.get_args(FedMKTSpec.model_fields["method"].annotation)) == set(METHODS)
    assert set(typing.get_args(FedMKTSpec.model_fields["selection"].annotation)) == set(SELECTION_RULES)
    for rule in SELECTION_RULES:  # every declared rule selects
        assert select_sources(np.array([1.0, 2.0]), np.array([[2.0, 1.0]]), rule).shape == (2, 2)
