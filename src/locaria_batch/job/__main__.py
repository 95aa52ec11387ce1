import sys

from locaria_batch.job import main

sys.exit(main())
