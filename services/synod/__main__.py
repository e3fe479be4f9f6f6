"""``python -m synod`` entry point."""

import sys

from synod.cli import main

if __name__ == "__main__":
    sys.exit(main())
