import sys

from nitihw.sim.cli import main

sys.exit(main())
