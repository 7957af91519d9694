"""``python -m evflow.cli``."""

import sys

from . import main

sys.exit(main())
