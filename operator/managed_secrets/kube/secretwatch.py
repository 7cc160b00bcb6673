"""A lean watch of the operator's own Secrets, to repair drift within seconds.

Only Secrets labelled ``managedsecrets.io/managed`` (``true``: owned; ``merged``: a Merge target) are
listed and watched, selected by the API server, and only as metadata (``PartialObjectMetadata``): no
Secret value ever reaches the operator through it, and unrelated Secrets cost nothing however many the
cluster holds. Kopf is not used for this on purpose: it cannot select by label on the server, so it would
receive every Secret of the cluster with its data.

The echo of the operator's own writes is not drift: ``OwnWrites`` remembers the resourceVersion each of
its writes returned (and the uid of each Secret it deleted), so a steady state costs no extra read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from managed_secrets.api import MANAGED_LABEL, MERGED_BY_ANNOTATION, OWNER_ANNOTATION

log = logging.getLogger(__name__)

#: Owned Secrets carry ``true``, Merge targets ``merged`` (see core/reconcile.py).
SELECTOR = f"{MANAGED_LABEL} in (true,merged)"
#: Metadata only, never the data; no fallback to full objects on purpose.
_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
_PAGE = 500

Key = tuple[str, str]  # (namespace, name) of a Secret


@dataclass(frozen=True, slots=True)
class SecretChange:
    """A change of a watched Secret: names, versions and the ManagedSecrets it points at; never data."""

    namespace: str
    name: str
    deleted: bool
    resource_version: str
    uid: str
    #: Names of the ManagedSecrets (same namespace) that own it or merge into it.
    owners: tuple[str, ...]

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def change_from_metadata(meta: Mapping[str, Any], *, deleted: bool) -> SecretChange:
    """Keeps only what drift detection needs; other annotations (a kubectl last-applied-configuration
    of a Secret holds its data) are dropped at once."""
    annotations = meta.get("annotations") or {}
    owners = tuple(
        dict.fromkeys(
            name
            for name in (annotations.get(OWNER_ANNOTATION), annotations.get(MERGED_BY_ANNOTATION))
            if name
        )
    )
    return SecretChange(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        deleted=deleted,
        resource_version=str(meta.get("resourceVersion", "")),
        uid=str(meta.get("uid", "")),
        owners=owners,
    )


class OwnWrites:
    """The operator's own writes to Secrets, so the watch can tell their echo from someone else's change.

    A watch event may arrive before the write that caused it has returned its resourceVersion; such an
    event is held until the write ends, then judged (only the latest one per Secret: it supersedes the
    others).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[Key, tuple[str, str]] = {}  # (resourceVersion, uid) the last write returned
        self._deleted: dict[Key, str] = {}  # uid of the Secret the operator last deleted
        self._in_flight: dict[Key, int] = {}
        self._held: dict[Key, SecretChange] = {}
        #: Where a held change goes when the write ends and it proves foreign (set by the watch).
        self.on_foreign: Callable[[SecretChange], None] | None = None

    def begin(self, key: Key) -> None:
        with self._lock:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def wrote(self, key: Key, resource_version: str | None, uid: str | None) -> None:
        if resource_version:
            with self._lock:
                self._versions[key] = (resource_version, uid or "")

    def deleted(self, key: Key, uid: str | None) -> None:
        if uid:
            with self._lock:
                self._deleted[key] = uid

    def end(self, key: Key) -> None:
        with self._lock:
            left = self._in_flight.get(key, 1) - 1
            if left > 0:
                self._in_flight[key] = left
                return
            self._in_flight.pop(key, None)
            held = self._held.pop(key, None)
            foreign = held is not None and not self._is_own(held)
            if held is not None:
                self._settle(held)
        if foreign and held is not None and self.on_foreign is not None:
            self.on_foreign(held)

    def judge(self, change: SecretChange) -> bool | None:
        """True: someone else's change; False: the echo of our own write; None: held until our write
        to that Secret ends."""
        with self._lock:
            if change.key in self._in_flight:
                self._held[change.key] = change
                return None
            own = self._is_own(change)
            self._settle(change)
            return not own

    def _is_own(self, change: SecretChange) -> bool:
        if change.deleted:
            return bool(change.uid) and self._deleted.get(change.key) == change.uid
        written = self._versions.get(change.key)
        return written is not None and written[0] == change.resource_version

    def _settle(self, change: SecretChange) -> None:
        """Forget what a deletion made useless, so the ledger holds only live Secrets."""
        if not change.deleted:
            return
        if self._deleted.get(change.key) == change.uid:
            del self._deleted[change.key]
        written = self._versions.get(change.key)
        if written is not None and written[1] == change.uid:
            del self._versions[change.key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._versions) + len(self._deleted)


class WatchGone(Exception):
    """410 Gone: the resourceVersion is too old; list again."""


class SecretWatch:
    """List-then-watch of managed Secrets, clusterwide or one per namespace, each in a daemon thread.

    Delivers every change that is not the echo of the operator's own write to ``on_change`` (from the
    watch thread, or from a worker thread for a held event). The first listing after the start delivers
    nothing: the start-up reconciles verify every object anyway. A re-list (after 410 Gone) compares with
    what was known and delivers the differences, so a change during a disconnection is not lost.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        own_writes: OwnWrites,
        on_change: Callable[[SecretChange], None],
        *,
        namespaces: Sequence[str] = (),
        server_timeout: int = 300,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self._api = api_client
        self._own = own_writes
        self._on_change = on_change
        self._scopes: tuple[str | None, ...] = tuple(namespaces) or (None,)
        self._server_timeout = server_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: dict[str | None, urllib3.HTTPResponse] = {}
        self._lock = threading.Lock()
        #: Watched Secrets that name an owner, as last seen: resourceVersion, uid and owners (for the
        #: re-list diff, and to know the owner of a Secret rewritten without our annotations).
        self._known: dict[Key, SecretChange] = {}
        #: Counters for tests and diagnostics: events received, changes delivered, lists made.
        self.events_received = 0
        self.changes_delivered = 0
        self.lists = 0
        own_writes.on_foreign = self._deliver

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        for scope in self._scopes:
            thread = threading.Thread(
                target=self._run, args=(scope,), name=f"secret-watch-{scope or 'all'}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        with self._lock:
            responses = list(self._responses.values())
        for response in responses:
            _shutdown(response)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    @property
    def known(self) -> int:
        """How many managed Secrets the watch knows (a few hundred bytes each)."""
        with self._lock:
            return len(self._known)

    # -- one scope ---------------------------------------------------------------------------------------

    def _run(self, namespace: str | None) -> None:
        version: str | None = None
        first = True
        failures = 0
        while not self._stopping.is_set():
            try:
                if version is None:
                    version = self._relist(namespace, deliver=not first)
                    first = False
                started = time.monotonic()
                version = self._watch(namespace, version)
                if time.monotonic() - started > 1:
                    failures = 0
                    continue
                failures += 1  # a watch that ends at once: do not spin
            except WatchGone:
                log.info("Secret watch (%s): resourceVersion too old; listing again", namespace or "all")
                version = None
                continue
            except ApiException as error:
                failures += 1
                if error.status == 410:
                    version = None
                log.warning(
                    "Secret watch (%s): HTTP %s %s; retrying",
                    namespace or "all namespaces",
                    error.status,
                    error.reason,
                )
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                failures += 1
                if not self._stopping.is_set():
                    log.info("Secret watch (%s): %s; reconnecting", namespace or "all", type(error).__name__)
            except Exception as error:  # never let the thread die: drift repair would stop silently
                failures += 1
                version = None
                what = namespace or "all"
                # The kind only, as everywhere: a traceback's locals could hold annotations.
                log.error("Secret watch (%s): unexpected %s; listing again", what, type(error).__name__)  # noqa: TRY400
            if self._stopping.is_set():
                return
            ceiling = min(self._backoff_max, self._backoff_base * 2 ** max(failures - 1, 0))
            self._stopping.wait(random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter

    def _path(self, namespace: str | None) -> str:
        return f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets" if namespace else "/api/v1/secrets"

    def _relist(self, namespace: str | None, *, deliver: bool) -> str:
        """List the managed Secrets of the scope; returns the list's resourceVersion."""
        listed, version = self._list(namespace)
        with self._lock:
            self.lists += 1
            before = {k: v for k, v in self._known.items() if namespace is None or k[0] == namespace}
            for key in before:
                del self._known[key]
            seen = {}
            for key, new in listed.items():
                kept = _keep_owners(new, before.get(key))
                if kept.owners:  # one that points at no ManagedSecret needs no repair, nor memory
                    seen[key] = kept
            self._known.update(seen)
        if deliver:
            for change in _differences(before, seen):
                self._judge(change)
        return version

    def _list(self, namespace: str | None) -> tuple[dict[Key, SecretChange], str]:
        listed: dict[Key, SecretChange] = {}
        token: str | None = None
        while True:
            query: list[tuple[str, Any]] = [("labelSelector", SELECTOR), ("limit", _PAGE)]
            if token:
                query.append(("continue", token))
            body = self._get(self._path(namespace), query, _LIST_ACCEPT, timeout=(10, 60))
            for item in body.get("items") or []:
                change = change_from_metadata(item.get("metadata") or {}, deleted=False)
                listed[change.key] = change
            meta = body.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return listed, str(meta.get("resourceVersion", ""))

    def _watch(self, namespace: str | None, version: str) -> str:
        """Follow events from ``version`` until the server ends the watch; returns the last version."""
        timeout = int(self._server_timeout * random.uniform(1, 1.5))  # noqa: S311 - spread reconnects
        query: list[tuple[str, Any]] = [
            ("labelSelector", SELECTOR),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", timeout),
        ]
        response = self._stream(self._path(namespace), query)
        with self._lock:
            self._responses[namespace] = response
        if self._stopping.is_set():  # stop() ran before the response was registered
            _shutdown(response)
        try:
            for line in _lines(response):
                if self._stopping.is_set():
                    break
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchGone
                    raise ApiException(status=obj.get("code"), reason=obj.get("reason"))
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                change = change_from_metadata(meta, deleted=kind == "DELETED")
                with self._lock:
                    self.events_received += 1
                    change = _keep_owners(change, self._known.get(change.key))
                    if change.deleted or not change.owners:
                        self._known.pop(change.key, None)
                    else:
                        self._known[change.key] = change
                self._judge(change)
        finally:
            with self._lock:
                self._responses.pop(namespace, None)
            response.close()  # a new connection for the next watch: never reuse a half-read stream
            response.release_conn()
        return version

    def _judge(self, change: SecretChange) -> None:
        if self._own.judge(change):
            self._deliver(change)

    def _deliver(self, change: SecretChange) -> None:
        if self._stopping.is_set() or not change.owners:
            return
        with self._lock:
            self.changes_delivered += 1
        try:
            self._on_change(change)
        except Exception as error:
            log.error("Secret watch: handling a change failed: %s", type(error).__name__)  # noqa: TRY400

    # -- HTTP --------------------------------------------------------------------------------------------

    def _get(
        self, path: str, query: list[tuple[str, Any]], accept: str, *, timeout: tuple[float, float]
    ) -> Mapping[str, Any]:
        response = self._call(path, query, accept, timeout)
        try:
            return json.loads(response.data)  # type: ignore[no-any-return]
        finally:
            response.release_conn()

    def _stream(self, path: str, query: list[tuple[str, Any]]) -> urllib3.HTTPResponse:
        return self._call(path, query, _WATCH_ACCEPT, (10, self._server_timeout * 1.5 + 30))

    def _call(
        self, path: str, query: list[tuple[str, Any]], accept: str, timeout: tuple[float, float]
    ) -> urllib3.HTTPResponse:
        response: urllib3.HTTPResponse = self._api.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
            _preload_content=False,  # parsed here, and never logged by the client
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        return response


def _differences(
    before: Mapping[Key, SecretChange], after: Mapping[Key, SecretChange]
) -> Iterator[SecretChange]:
    """What changed between two listings: deleted, modified (another resourceVersion) and added."""
    for key, old in before.items():
        new = after.get(key)
        if new is None:
            yield dataclasses.replace(old, deleted=True)
        elif new.resource_version != old.resource_version:
            yield new
    for key, new in after.items():
        if key not in before:
            yield new


def _keep_owners(change: SecretChange, previous: SecretChange | None) -> SecretChange:
    """A Secret rewritten without our annotations (``kubectl replace``) still belongs to whoever it
    belonged to: the repair puts them back."""
    if change.owners or previous is None or previous.uid != change.uid:
        return change
    return dataclasses.replace(change, owners=previous.owners)


def _lines(response: urllib3.HTTPResponse) -> Iterator[str]:
    for line in iter_resp_lines(response):
        if line:
            yield line


def _shutdown(response: urllib3.HTTPResponse) -> None:
    """Unblock the thread reading this response (called from another thread, at stop)."""
    with contextlib.suppress(Exception):  # already closed or released: nothing to unblock
        response.shutdown()
