"""`python -m tacx`."""

import sys

from tacx.cli.main import main

sys.exit(main())
