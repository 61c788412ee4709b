import sys

from nitihw.sim.command.cli import main

sys.exit(main())
