"""`python -m tacx`."""

import sys

from tacx.cli import main

sys.exit(main())
