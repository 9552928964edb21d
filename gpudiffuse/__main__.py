"""``python -m gpudiffuse``: the same as the ``gpudiffuse`` command."""

import sys

from .cli import main

sys.exit(main())
