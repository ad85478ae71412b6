"""Ed25519 station keys: creation, loading and key ids.

Private keys are PKCS#8 PEM files created with mode 0600 (never wider, not
even for an instant); public keys travel as base64 of the 32 raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class KeyFileError(ValueError):
    pass


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 over the raw public key, as 16 hex digits."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_b64(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise KeyFileError(f"public key is not base64: {exc}") from exc
    if len(raw) != 32:
        raise KeyFileError(f"an Ed25519 public key has 32 bytes, this one has {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


def write_new_key(private_path: Path) -> SigningKey:
    """Create a key pair: ``<name>.key`` (0600) and ``<name>.pub`` beside it."""
    private_path = Path(private_path)
    public_path = private_path.with_suffix(".pub")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a station's existing identity by accident.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_text(public_key_b64(private_key.public_key()) + "\n")
    return SigningKey(key_id(private_key.public_key()), private_key)


def load_signing_key(private_path: Path) -> SigningKey:
    private_path = Path(private_path)
    try:
        mode = private_path.stat().st_mode & 0o777
    except FileNotFoundError as exc:
        raise KeyFileError(f"{private_path}: no such key file; create one with `quantrac keys new`") from exc
    # Windows has no POSIX modes (st_mode says 0o666 or 0o444 for every file): there the file's ACL
    # keeps others out (scripts/windows/install-agent.ps1 sets it), so the check cannot be made.
    if mode & 0o077 and os.name != "nt":
        raise KeyFileError(
            f"{private_path}: private key is readable by others (mode {mode:o}); run `chmod 600 {private_path}`"
        )
    try:
        private_key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except ValueError as exc:
        raise KeyFileError(f"{private_path}: not a PEM private key ({exc})") from exc
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyFileError(f"{private_path}: not an Ed25519 key")
    return SigningKey(key_id(private_key.public_key()), private_key)


def load_public_key(public_path: Path) -> Ed25519PublicKey:
    return public_key_from_b64(Path(public_path).read_text())
