"""``python -m eventlog`` runs the ``eventlog`` command."""

import sys

from .cli import main

sys.exit(main())
