"""``python -m benchmarks [--quick] [--out DIR]``: see :mod:`benchmarks.run`."""

import sys

from .run import main

main(sys.argv[1:])
