"""`python -m keras_mle.cli`: the console script `keras-mle` (its front end, then this package)."""

import sys

from keras_mle_cli.entry import main

sys.exit(main())
