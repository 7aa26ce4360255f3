"""``python -m alvae_utils`` — see :mod:`alvae_utils.cli`."""

import sys

from .cli import main

sys.exit(main())
