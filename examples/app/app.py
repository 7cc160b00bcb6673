"""The example app: reads its database settings from the environment, as its Deployment gives them
(envFrom the Secrets app-db and app-db-url), and says what it would connect to, never the password."""

import os
import sys
from urllib.parse import urlsplit

missing = [name for name in ("DB_USERNAME", "DB_PASSWORD", "DATABASE_URL") if not os.environ.get(name)]
if missing:
    sys.exit(f"app: missing settings: {', '.join(missing)}")
url = urlsplit(os.environ["DATABASE_URL"])
if url.username != os.environ["DB_USERNAME"] or url.port is None:
    sys.exit("app: DATABASE_URL does not match DB_USERNAME or has no port")
print(f"app: would connect to {url.hostname}:{url.port}{url.path} as {url.username}")
