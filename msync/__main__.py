"""C{python -m msync}: the same as the C{msync} command."""

import sys

from msync.cli import main

sys.exit(main())
