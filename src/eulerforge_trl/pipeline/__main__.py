import sys

from .full import main

sys.exit(main())
