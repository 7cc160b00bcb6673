"""Keep secret material out of logs at every level.

Several SDKs log whole HTTP bodies at DEBUG (the Kubernetes client logs response bodies, which for a
Secret are its data; botocore logs responses too). Their loggers are pinned above DEBUG whatever the
operator's own level is, so a DEBUG run of the operator is still safe to share.
"""

from __future__ import annotations

import logging

#: Loggers that print request or response bodies at DEBUG.
BODY_LOGGING_LOGGERS = (
    "kubernetes.client.rest",
    "urllib3",
    "botocore",
    "boto3",
    "hvac",
    "azure",
    "azure.core.pipeline.policies.http_logging_policy",
    "google",
    "grpc",
    "requests",
)


def pin_sdk_loggers(level: int = logging.INFO) -> None:
    for name in BODY_LOGGING_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; Kopf's per-object loggers add the object's namespace and name."""

    def format(self, record: logging.LogRecord) -> str:
        import json  # noqa: PLC0415 - only when JSON logs are asked for

        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        k8s_ref = getattr(record, "k8s_ref", None)
        if isinstance(k8s_ref, dict):
            entry["object"] = {k: k8s_ref.get(k) for k in ("kind", "namespace", "name")}
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            entry["audit"] = audit
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    pin_sdk_loggers()
    if root.level > logging.DEBUG:
        # Kopf says "Handler ... succeeded" at INFO for every watch event: noise, and CPU at scale.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
