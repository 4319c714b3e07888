"""Keep the API key out of every log line, exception text and repr.

The key travels in the `apikey` header, so URLs never carry it; this module is
the second line of defence for anything that might still echo it (a base URL
someone wrote with `?apikey=`, an error body, a third-party log line).
"""

from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_QUERY_KEY = re.compile(r"(apikey=)[^&\s'\"]+", re.IGNORECASE)
_secrets: set[str] = set()
_lock = threading.Lock()
# httpx logs every request at INFO and httpcore every socket event at DEBUG:
# useful to nobody here, and a place a key could surface.
_TRANSPORT_LOGGERS = ("httpx", "httpcore", "httpcore.http11", "httpcore.connection",
                      "httpcore.connection_pool", "httpcore.proxy")


def redact(text: str) -> str:
    text = _QUERY_KEY.sub(rf"\1{MASK}", text)
    for secret in _secrets:
        text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def protect_secret(secret: str) -> None:
    """Register a key for redaction and quiet the HTTP transport loggers."""
    if not secret:
        return
    with _lock:
        new = secret not in _secrets
        _secrets.add(secret)
    if new:
        for name in _TRANSPORT_LOGGERS:
            logger = logging.getLogger(name)
            logger.setLevel(logging.WARNING)
            if not any(isinstance(f, RedactingFilter) for f in logger.filters):
                logger.addFilter(RedactingFilter())
