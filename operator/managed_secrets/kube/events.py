"""Events for a person to read (names and reasons only): the controller's and the rollouts'."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from kubernetes import client

from managed_secrets import errors
from managed_secrets.kube.edge import Translation, send

log = logging.getLogger(__name__)

POST = Translation(errors.WriteFailed)


class KubeEvents:
    """Implements the ``post_event`` of the controller's StatusWriter and the rollouts' EventWriter."""

    def __init__(self, api_client: client.ApiClient, *, instance: str = "managed-secrets") -> None:
        self._core = client.CoreV1Api(api_client)
        #: reportingInstance of the Events: which replica saw it (the pod name in a cluster).
        self._instance = instance

    def post_event(
        self,
        involved: Mapping[str, str],
        *,
        reason: str,
        message: str,
        type_: str = "Normal",
        events_namespace: str | None = None,
    ) -> None:
        """Failures are logged, not raised: an Event is never worth failing a sync for.
        ``events_namespace``: where the Event goes, for a cluster-scoped object (default: its own)."""
        namespace = events_namespace or involved["namespace"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "managed-secrets"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "managed-secrets",
            "reportingInstance": self._instance,
        }
        try:
            send(
                f"posting event {reason} on {'/'.join(filter(None, (involved.get('namespace'), involved.get('name'))))}",
                POST,
                self._core.create_namespaced_event,
                namespace,
                body,
            )
        except errors.SyncError as error:
            log.warning("could not post event: %s", error.message)
