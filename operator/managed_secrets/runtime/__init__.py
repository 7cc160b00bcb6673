"""The operator's scheduler: a work queue with refresh timers, backoff and dedup, free of Kopf."""
