"""``python -m stetho`` (also what ``torchrun … -m stetho train …`` runs on every process)."""

import sys

from stetho.cli import main

sys.exit(main())
