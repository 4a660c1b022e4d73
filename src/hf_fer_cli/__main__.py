"""``python -m hf_fer_cli ...`` is ``hf-fer ...``."""
import sys

from . import main

sys.exit(main())
