"""``python -m cli`` runs the ``mnist-pipeline`` command line."""

import sys

from cli.main import main

sys.exit(main())
