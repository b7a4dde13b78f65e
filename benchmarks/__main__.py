import sys

from benchmarks.tail_report import main

sys.exit(main())
