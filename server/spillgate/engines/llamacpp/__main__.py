"""`python -m spillgate.engines.llamacpp --model-path … --served-name …`."""

import sys

from spillgate.engines.llamacpp.main import run

if __name__ == "__main__":  # not when a spawned decode process imports this module
    sys.exit(run(sys.argv[1:]))
