"""``python -m ghcr2gitea``: the same as the ``ghcr2gitea`` command."""

import sys

from ghcr2gitea.cli import main

sys.exit(main())
