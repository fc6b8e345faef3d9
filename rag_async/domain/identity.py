"""Who is calling: API keys, the one local user of an instance without keys, and the signed
tokens that let EventSource (which cannot send a key) follow one job.

Secrets are kept only as SHA-256 digests and compared in constant time; a key is known, and
logged, by its name. Everything a key creates carries that name as its owner, and a key that
is not an admin sees nothing owned by another: another key's job is a 404, like an unknown id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import time
from dataclasses import dataclass, replace

from pydantic import SecretStr

from rag_async.config import Settings
from rag_async.domain.errors import ConfigurationError

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Between an owner and a collection name in the stored name; collection names cannot hold it.
_SCOPE = "/"


@dataclass(frozen=True, slots=True)
class Principal:
    """A caller: a key's name, or "" for the local user of an instance without keys."""

    name: str
    admin: bool
    weight: float = 1.0  # its share of the workers against other keys' (RAG_KEY_WEIGHTS)

    def may_see(self, owner: str | None) -> bool:
        return self.admin or (owner or "") == self.name

    def collection(self, name: str) -> str:
        """The stored name of this caller's collection `name`: each key has its own."""
        return f"{self.name}{_SCOPE}{name}" if self.name else name


LOCAL = Principal(name="", admin=True)


def shown_collection(stored: str) -> str:
    """A stored collection name as its owner named it."""
    return stored.rpartition(_SCOPE)[2]


class KeyRing:
    """The configured API keys, by the digest of their secret."""

    def __init__(self, keys: dict[bytes, Principal]) -> None:
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        keys: dict[bytes, Principal] = {}
        names: set[str] = set()
        sources = [
            ("RAG_API_KEYS", _secret(settings.api_keys), False),
            ("RAG_API_KEYS_FILE", _read(settings), False),
            ("RAG_ADMIN_KEYS", _secret(settings.admin_keys), True),
        ]
        for variable, text, admin in sources:
            for name, secret in _pairs(variable, text):
                if name in names:
                    raise ConfigurationError(f"{variable}: the key name {name!r} is used twice")
                names.add(name)
                keys[_digest(secret)] = Principal(name=name, admin=admin)
        weights = _weights(settings.key_weights, names)
        return cls(
            {
                digest: replace(key, weight=weights.get(key.name, 1.0))
                for digest, key in keys.items()
            }
        )

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, secret: str) -> Principal | None:
        """The key whose secret this is. Every digest is compared, in constant time."""
        digest = _digest(secret)
        found = None
        for known, principal in self._keys.items():
            if hmac.compare_digest(digest, known):
                found = principal
        return found

    def token_secret(self, settings: Settings) -> bytes:
        """The events tokens' signing secret: the setting, else one derived from the keys."""
        if settings.token_secret is not None:
            return settings.token_secret.get_secret_value().encode()
        return hashlib.sha256(b"rag-async events token\x00" + b"".join(sorted(self._keys))).digest()


class EventsTokens:
    """`<expiry>.<signature>`: lets whoever holds it follow one job of one owner until it
    expires. HMAC-SHA256 over the job id, the owner and the expiry."""

    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret = secret
        self._ttl = ttl

    def issue(self, job_id: str, owner: str) -> str:
        expires = int(time.time()) + self._ttl
        return f"{expires}.{self._sign(job_id, owner, expires)}"

    def valid(self, token: str, job_id: str, owner: str) -> bool:
        expiry, _, signature = token.partition(".")
        if not expiry.isdigit() or int(expiry) < time.time():
            return False
        return hmac.compare_digest(signature, self._sign(job_id, owner, int(expiry)))

    def _sign(self, job_id: str, owner: str, expires: int) -> str:
        message = f"{job_id}\n{owner}\n{expires}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _read(settings: Settings) -> str:
    path = settings.api_keys_file
    if path is None:
        return ""
    try:
        return path.read_text()
    except OSError as error:
        raise ConfigurationError(f"RAG_API_KEYS_FILE: cannot read {path}: {error}") from None


def _pairs(variable: str, text: str) -> list[tuple[str, str]]:
    """`name=secret` items, separated by commas or new lines; blank lines and # comments
    are skipped."""
    pairs = []
    for item in re.split(r"[,\n]", text):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, equals, secret = item.partition("=")
        name, secret = name.strip(), secret.strip()
        if not equals or not _NAME.fullmatch(name) or len(secret) < 16:
            raise ConfigurationError(
                f"{variable}: each key is name=secret, the name of letters, digits, '.', '_' "
                "or '-' and the secret at least 16 characters long"
            )
        pairs.append((name, secret))
    return pairs


def _weights(text: str, names: set[str]) -> dict[str, float]:
    """RAG_KEY_WEIGHTS: `name=weight` items, each naming a configured key, weights above 0."""
    weights: dict[str, float] = {}
    for item in re.split(r"[,\n]", text):
        name, equals, value = (part.strip() for part in item.partition("="))
        if not name:
            continue
        try:
            weight = float(value) if equals else 0.0
        except ValueError:
            weight = 0.0
        if name not in names or not 0 < weight <= 1000:
            raise ConfigurationError(
                f"RAG_KEY_WEIGHTS: {item.strip()!r}: each item is name=weight, naming a key of "
                "RAG_API_KEYS, RAG_API_KEYS_FILE or RAG_ADMIN_KEYS, with a weight above 0 and "
                "at most 1000"
            )
        weights[name] = weight
    return weights


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def check_exposure(settings: Settings) -> KeyRing:
    """The configured keys, after making sure an API without any listens on loopback only
    (or was told it may serve anyone, `RAG_ALLOW_ANONYMOUS`). Raises `ConfigurationError`."""
    keyring = KeyRing.from_settings(settings)
    if keyring.enabled or settings.allow_anonymous or _is_loopback(settings.host):
        return keyring
    raise ConfigurationError(
        f"RAG_HOST={settings.host} would let anyone who reaches it read every answer and "
        "document: set RAG_API_KEYS (or RAG_API_KEYS_FILE), or RAG_ALLOW_ANONYMOUS=1 to "
        "serve it without keys anyway (behind a proxy that authenticates, say)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def held_to_quotas(principal: Principal) -> bool:
    """Whether the per-key limits apply to this caller: every key, admins' too (a script
    holding an admin key can run away like any other), but not the local user of an instance
    without keys, which has one user (api/quotas.py says more)."""
    return principal != LOCAL
