"""The README's test command is what CI runs, and it runs every test; plain `pytest` the fast set."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys

from tests.conftest import ROOT


def readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    [command] = re.findall(r"Set up and run the tests.*?```bash\n(.*?)\n```", readme, re.S)
    return command


def collected(*arguments: str) -> str:
    """pytest's collection summary for tests/test_benchmarks.py (every test there is slow)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *arguments, "tests/test_benchmarks.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    return result.stdout.strip().splitlines()[-1]


def test_ci_runs_the_readmes_test_command_and_it_selects_the_slow_tests_too():
    command = readme_test_command()
    assert command in (ROOT / ".ci" / "run").read_text()
    arguments = shlex.split(command.split("-m pytest", 1)[1])
    assert re.fullmatch(r"2 tests collected in .*", collected(*arguments))
    assert re.fullmatch(r"no tests collected \(2 deselected\) in .*", collected())   # plain pytest: the fast set
