import sys

from managed_secrets.cli import main

sys.exit(main())
