"""`python -m keras_mle_cli`: the console script `keras-mle`."""

import sys

from keras_mle_cli.entry import main

sys.exit(main())
