"""`python -m spillgate` is the `spillgate` command."""

import sys

from spillgate.cli import main

sys.exit(main())
