"""Raw responses of the Kubernetes client (``_preload_content=False``): parsed once, connection returned.

Skipping the client's model classes saves most of its CPU per call, but urllib3 then hands the connection
back to its pool only when told to: without ``release_conn`` every call would open a new TLS connection.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3


def read_json(response: urllib3.HTTPResponse) -> Any:
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def release(response: urllib3.HTTPResponse) -> None:
    response.drain_conn()
    response.release_conn()
