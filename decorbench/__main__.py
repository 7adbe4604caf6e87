import sys

from decorbench.cli import main

sys.exit(main())
