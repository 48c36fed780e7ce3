"""`python -m fedraft`: the same command line as the `fedraft` script."""

import sys

from fedraft.cli.main import main

sys.exit(main())
