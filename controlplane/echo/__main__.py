"""``python -m controlplane.echo``: the same as ``mirrorplane echo``."""

import sys

from .cli import main

sys.exit(main())
