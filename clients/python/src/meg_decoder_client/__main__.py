"""`python -m meg_decoder_client`: the console subscriber (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
