"""``python -m alvae_utils`` — see :mod:`alvae_utils.workflow.cli`."""

import sys

from .workflow.cli import main

sys.exit(main())
