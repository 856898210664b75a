import sys

from gan_lab.bench.cli import main

sys.exit(main())
