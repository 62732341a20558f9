"""`python -m spillgate.engines.llamacpp --model-path … --served-name …`."""

import sys

from spillgate.engines.llamacpp.main import run

sys.exit(run(sys.argv[1:]))
