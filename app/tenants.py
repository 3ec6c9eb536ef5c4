"""API keys, tenants and per-collection rights (the tenant-scoped engine is index/tenants.py).

The keys file (YAML, named by ``Settings.api_keys_file``) holds only SHA-256 hashes of the keys::

    keys:
      - name: acme-search            # for logs and messages; never the key itself
        sha256: 9f86d08...           # loupe apikey prints a new key and this line
        tenant: acme
        collections: {docs: read, reports: write, "*": read}

A key presented to the API is hashed and compared with every stored hash in constant time
(``hmac.compare_digest``), so response timing says nothing about how much of a key matched. Keys are random
32-byte tokens: a plain hash is enough (no password-style stretching is needed for that much entropy).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from loupe.errors import ConfigError

Right = Literal["read", "write"]
DEFAULT_TENANT = "default"
# Tenant names become folder names (one data folder per tenant): the same alphabet as collection names.
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def valid_name(name: str) -> bool:
    """Whether ``name`` is a safe tenant or collection name (letters, digits, '-', '_'; 1-64 characters)."""
    return 0 < len(name) <= 64 and set(name) <= _NAME_CHARS


def hash_key(key: str) -> str:
    """The SHA-256 hex digest stored for an API key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (32 bytes, URL-safe)."""
    return "lp_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Access:
    """What one API key may do: its tenant and a right per collection (``"*"`` matches any collection)."""

    name: str
    tenant: str
    collections: Mapping[str, Right] = field(default_factory=dict)

    def right(self, collection: str) -> Right | None:
        """The right on ``collection`` (an exact entry wins over ``"*"``), or None."""
        return self.collections.get(collection) or self.collections.get("*")

    def can_read(self, collection: str) -> bool:
        """Read is granted by a read or a write right."""
        return self.right(collection) is not None

    def can_write(self, collection: str) -> bool:
        """Write (ingest, delete, create, drop) needs a write right."""
        return self.right(collection) == "write"


@dataclass(frozen=True)
class KeyStore:
    """Hashed API keys → :class:`Access`."""

    entries: Sequence[tuple[str, Access]]

    @classmethod
    def load(cls, path: str | Path) -> KeyStore:
        """Read a keys file; errors name the file and the entry, never a key or a hash."""
        p = Path(path)
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"cannot read the API keys file {p}: {type(e).__name__}. Fix it or unset it.") from e
        raw = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(raw, list):
            raise ConfigError(f"API keys file {p} must hold a 'keys:' list (see docs/api.md)")
        entries = []
        for i, item in enumerate(raw):
            entries.append(_entry(p, i, item))
        return cls(tuple(entries))

    def lookup(self, key: str | None) -> Access | None:
        """The access of a presented key, or None. Compares against every entry in constant time."""
        if not key:
            return None
        digest = hash_key(key)
        found: Access | None = None
        for stored, access in self.entries:
            # No early exit: every entry is compared, so timing does not tell which entry (if any) matched.
            if hmac.compare_digest(stored, digest):
                found = access
        return found


def _entry(path: Path, i: int, item: Any) -> tuple[str, Access]:
    where = f"API keys file {path}, entry {i + 1}"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: expected a mapping with sha256, tenant and collections")
    digest = str(item.get("sha256", "")).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ConfigError(f"{where}: 'sha256' must be the 64-hex-digit SHA-256 of the key (loupe apikey prints it)")
    tenant = str(item.get("tenant", ""))
    if not valid_name(tenant):
        raise ConfigError(f"{where}: tenant must use letters, digits, '-' and '_' (1-64 characters)")
    cols = item.get("collections") or {}
    if not isinstance(cols, dict):
        raise ConfigError(f"{where}: 'collections' must map collection names (or '*') to read or write")
    rights: dict[str, Right] = {}
    for name, right in cols.items():
        if right not in ("read", "write") or not (name == "*" or valid_name(str(name))):
            raise ConfigError(f"{where}: collection {name!r} must be a valid name or '*', with right read or write")
        rights[str(name)] = right
    return digest, Access(str(item.get("name") or f"key-{i + 1}"), tenant, rights)
