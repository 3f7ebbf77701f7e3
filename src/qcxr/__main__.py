import sys

from qcxr.cli import main

sys.exit(main())
