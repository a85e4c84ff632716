#!/usr/bin/env python3
"""
Create the development CA and server certificate msync runs with locally.

Run it from the repository root as C{python certs/make_dev_certs.py certs}
(C{make run} and C{make test} do).  Certificates already there are kept;
delete one of them to get a fresh set.  The work is done by
L{msync.devcerts}.
"""

import sys

from msync.devcerts import main

if __name__ == "__main__":
    sys.exit(main())
