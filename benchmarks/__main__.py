"""``python -m benchmarks [--quick] [--only NAME] [--json PATH]``: see :mod:`benchmarks.runner`."""

import sys

from .runner import main

sys.exit(main())
