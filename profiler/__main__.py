"""``python -m profiler``: the stackprof command line."""

import sys

from profiler.cli import main

sys.exit(main())
