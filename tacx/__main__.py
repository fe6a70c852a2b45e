"""`python -m tacx`."""

import sys

from tacx.cli.entry import main

sys.exit(main())
