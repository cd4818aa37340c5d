import sys

from ssl_assets.cli import main

sys.exit(main())
