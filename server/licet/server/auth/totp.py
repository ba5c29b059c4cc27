"""TOTP second factor (RFC 6238 through pyotp) and single-use backup codes."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import datetime

import pyotp
import segno

STEP_SECONDS = 30
BACKUP_CODES = 10


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app scans."""
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The URI as an SVG QR code."""
    return str(segno.make(uri, error="m").svg_inline(scale=4))


def matching_step(secret: str, code: str, now: datetime, last_step: int | None) -> int | None:
    """The time step (now ±1) whose code is `code`, if that step is later than the last one used;
    refusing earlier steps makes every code single use."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in (current - 1, current, current + 1):
        if (last_step is None or step > last_step) and secrets.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_backup_codes() -> list[str]:
    """Ten codes of 80 random bits, as `xxxx-xxxx-xxxx-xxxx` in base32."""
    codes = []
    for _ in range(BACKUP_CODES):
        raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 10 bytes: exactly 16 characters
        codes.append("-".join(raw[i:i + 4] for i in range(0, 16, 4)))
    return codes


def backup_code_hash(code: str) -> str:
    """What is stored of a backup code (normalised: case, spaces and dashes do not matter)."""
    return hashlib.sha256(code.strip().lower().replace("-", "").replace(" ", "").encode()).hexdigest()
