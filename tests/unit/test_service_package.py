"""The service package's public names load on first use (the CLI reads the configuration
without importing the engine and the HTTP stack)."""

from __future__ import annotations

import subprocess
import sys


def test_tune_gc_is_importable_from_the_package_as_the_readme_says() -> None:
    code = (
        "import sys\n"
        "import evflow.service.config\n"
        "assert 'evflow.http.app' not in sys.modules, 'reading config imported the HTTP app'\n"
        "from evflow.service import build_engine, tune_gc\n"
        "tune_gc()\n"
        "assert callable(build_engine)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
