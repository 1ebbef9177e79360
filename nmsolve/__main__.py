import sys

from nmsolve.cli import main

sys.exit(main())
