"""`python -m dupflow.hygiene CONFIG`: one hygiene run (see dupflow.hygiene.main)."""

import sys

from .main import main

sys.exit(main())
