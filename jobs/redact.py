"""One policy for secrets in what a job writes: job.json, summary.json, W&B configs and metadata.

`redact(value)` returns a copy of any JSON-like value (dicts, lists, strings) with every secret
replaced by `REDACTED`:

- the value of any key that names a credential: a word key, token, secret, password, auth, ...
  of the key's name (`api_key`, `hf_token`, `Authorization`, `aws_secret_access_key`); not
  `max_tokens` or `batch_tokens` (plural, counts), nor a name ending in `_env`, which holds the
  name of a variable, not its value (`api_key_env: OPENAI_API_KEY`);
- every value of an `env` mapping (a member's environment variables): their names are free, and
  the environment is where credentials usually go;
- the user and password of a URL (`https://user:pass@host/v1` -> `https://<redacted>@host/v1`),
  and its query parameters that name a credential (`?api_key=...`).

Redacting twice gives the same result, so a value read back from an older file can be compared
with a new one (see `jobs.data.resume`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"

# Words of a key's name that make its value a credential.
_SECRET_WORDS = frozenset({
    "key", "keys", "apikey", "token", "secret", "password", "passwd", "passphrase", "pwd", "credential", "credentials",
    "auth", "authorization", "bearer", "cookie", "signature", "sig", "privatekey", "accesskey", "secretkey",
})
_ENV_MAPPINGS = frozenset({"env", "environ", "environment", "env_vars"})


def redact(value: Any, key: str = "") -> Any:
    """`value` (held under `key`, if any) with its secrets replaced by REDACTED."""
    if isinstance(value, dict):
        if key.lower() in _ENV_MAPPINGS:
            return {k: REDACTED if v not in (None, "") else v for k, v in value.items()}
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, key) for v in value]
    if value in (None, "") or isinstance(value, bool):
        return value
    if is_secret_name(key):
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    return value


def is_secret_name(name: str) -> bool:
    """Whether a setting's name says it holds a credential."""
    # snake_case, kebab-case, dotted and camelCase names alike: split into lower-case words.
    words = re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())
    if not words or words[-1] == "env":
        return False
    return any(w in _SECRET_WORDS for w in words)


def redact_url(text: str) -> str:
    """A URL without its user, password and credential query parameters; other text as it is."""
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text.strip())
        netloc = parts.netloc
        if parts.username is not None or parts.password is not None:
            netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(is_secret_name(k) for k, _ in pairs):
                query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="<>")
        if netloc == parts.netloc and query == parts.query:
            return text
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not a URL after all (e.g. a bad port): keep nothing that could be one
        return REDACTED if "@" in text else text
