"""Credentials: referenced in the config, resolved only where a connection is opened, never stored or shown.

A location in the config (`input.sales`, `input.sku_master`, `tracking.uri`) may carry a credential only as a
reference, resolved at the moment the file, store or server is opened:

- `${NAME}`: the environment variable NAME, e.g. `https://reports:${SALES_TOKEN}@erp.example.com/sales.csv`;
- `${prefect-secret:NAME}`: the value of the Prefect Secret block NAME (on the flow's Prefect server).

A password written into a location (`https://user:hunter2@host/...`) is refused by the config schema; the CLI moves one
given on its command line into an environment variable of its own process and passes the reference on, so the
password never reaches the flow's parameters (which Prefect stores), the manifest, MLflow or the report.

`redact` is what every message, log record and stored string goes through: a URL's password and secret query
parameters become `***`, and so does any value a reference was resolved to in this process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from urllib.parse import urlsplit

#: `scheme://user:password@` (the password may be empty); the user name is kept, the password is not.
_URL_CREDENTIALS = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@/\s]*)@")
#: Query parameters that carry secrets in pre-signed or token URLs.
_SECRET_QUERY = re.compile(
    r"(?i)(?P<head>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#\s]+"
)
_REFERENCE = re.compile(r"\$\{(?P<name>[^}]+)\}")
MASK = "***"

#: Values references were resolved to in this process: redacted wherever they show up (a library's error message).
_RESOLVED: set[str] = set()


class SecretError(ValueError):
    """A reference that cannot be resolved: one line naming the reference (never a value) and what to do."""


def redact(text: object) -> str:
    """`text` with URL passwords, secret query parameters and every resolved secret value replaced by ***."""
    out = str(text)
    for value in sorted(_RESOLVED, key=len, reverse=True):
        out = out.replace(value, MASK)
    # A reference (`${NAME}`) is not a secret: it stays, so a message says which variable was used.
    out = _URL_CREDENTIALS.sub(lambda m: m[0] if not m["password"] or _REFERENCE.fullmatch(m["password"]) else f"{m['head']}:{MASK}@", out)
    return _SECRET_QUERY.sub(lambda m: f"{m['head']}{MASK}", out)


def literal_credential(location: str | None) -> bool:
    """Whether `location` is a URL with a password (or a secret query parameter) written out, not referenced."""
    if not location or "://" not in location:
        return False
    without_references = _REFERENCE.sub("", location)
    return redact(without_references) != without_references


def has_reference(location: str | None) -> bool:
    return bool(location) and _REFERENCE.search(location) is not None


#: Resolvers of `${<kind>:NAME}` references by kind; flows/secrets.py registers `prefect-secret` (Prefect lives there).
RESOLVERS: dict[str, Callable[[str, str], str]] = {}


def resolve(location: str, *, key: str = "the config") -> str:
    """`location` with every `${NAME}` (environment) / `${kind:NAME}` (a registered resolver) replaced by its value,
    remembered for `redact`. Raises SecretError naming the reference and `key` when it cannot be resolved."""

    def value(match: re.Match[str]) -> str:
        name = match["name"].strip()
        kind, _, ref = name.partition(":")
        if ref:
            if kind not in RESOLVERS:
                raise SecretError(f"{key} refers to ${{{name}}}, but '{kind}' is not a kind of secret buffercast knows (prefect-secret)")
            found = RESOLVERS[kind](ref.strip(), key)
        else:
            found = os.environ.get(name)
            if found is None:
                raise SecretError(f"{key} refers to the environment variable {name} (${{{name}}}), which is not set: set it, or fix {key}")
        if found:
            _RESOLVED.add(found)
        return found

    return _REFERENCE.sub(value, location)


def to_reference(location: str, variable: str) -> str:
    """A URL with a written-out password rewritten to reference the environment variable `variable`, which is set to
    the password in this process (the CLI's way of keeping a password given on its command line out of the config)."""
    parts = urlsplit(location)
    if parts.password is None or _REFERENCE.fullmatch(parts.password):  # none, or already a reference
        return location
    os.environ[variable] = parts.password
    _RESOLVED.add(parts.password)
    user = f"{parts.username}:" if parts.username is not None else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return location.replace(parts.netloc, f"{user}${{{variable}}}@{host}", 1)


class RedactingFilter(logging.Filter):
    """A handler filter that redacts each record's message and traceback before it is written or sent anywhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


#: The loggers Prefect gives handlers to (the console, and the API that stores a run's logs).
PREFECT_LOGGERS = ("prefect", "prefect.flow_runs", "prefect.task_runs")


def redact_logs(*logger_names: str) -> None:
    """Put a RedactingFilter on every handler of the root logger and of `logger_names` (once each)."""
    for logger in (logging.getLogger(), *(logging.getLogger(name) for name in logger_names)):
        for handler in logger.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
