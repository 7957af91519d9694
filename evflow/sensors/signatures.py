"""How a webhook sender proves who it is: one pure function per signature scheme.

Each check takes the request's headers (case-insensitive mapping), the raw body, the hook's
secret and the current time, and returns ``None`` when the signature holds, else one sentence
saying what is wrong and how to sign. No I/O, so every scheme is tested with vectors.

* ``evflow`` (the default): ``X-Evflow-Timestamp`` (unix seconds) and ``X-Evflow-Signature:
  sha256=<hex HMAC-SHA256 over "<timestamp>." + body>``, within a tolerance window;
* ``standard``: the Standard Webhooks specification — ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>." + body>`` (several
  space-separated signatures allowed, for key rotation), the secret in ``whsec_<base64>`` form;
* ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 over the body>``, keyed with the
  secret's UTF-8 bytes (GitHub signs no timestamp).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping

__all__ = ["SCHEMES", "check_evflow", "check_github", "check_standard", "sign"]

TIMESTAMP_HEADER = "X-Evflow-Timestamp"
SIGNATURE_HEADER = "X-Evflow-Signature"

Check = Callable[[Mapping[str, str], bytes, str, float, float], "str | None"]


def sign(secret: str | bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """evflow's scheme: the headers that authenticate ``body`` with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: f"sha256={digest}"}


def _timestamp(text: str | None, header: str, tolerance_s: float, now: float) -> str | None:
    """None if ``text`` is unix seconds within ``tolerance_s`` of ``now``, else the problem."""
    if text is None:
        return f"missing {header} header"
    text = text.strip()
    if not text.isdigit() or len(text) > 12:
        return f"{header} must be unix time in whole seconds, not {text[:20]!r}"
    skew = now - int(text)
    if abs(skew) > tolerance_s:
        return (
            f"{header} is {abs(skew):.0f}s {'old' if skew > 0 else 'in the future'} "
            f"(tolerance {tolerance_s:g}s); sign with the current time and check the sender's clock"
        )
    return None


def check_evflow(
    headers: Mapping[str, str], body: bytes, secret: str, tolerance_s: float, now: float
) -> str | None:
    how = (
        f"sign with HMAC-SHA256 over '<timestamp>.' + body and send {TIMESTAMP_HEADER} "
        f"and {SIGNATURE_HEADER}: sha256=<hex>"
    )
    ts = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if ts is None or signature is None:
        return f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header; {how}"
    problem = _timestamp(ts, TIMESTAMP_HEADER, tolerance_s, now)
    if problem is not None:
        return problem
    scheme, _, given = signature.strip().partition("=")
    if scheme.strip().lower() != "sha256" or not given:
        return f"{SIGNATURE_HEADER} must look like 'sha256=<hex>'"
    expected = sign(secret, body, int(ts.strip()))[SIGNATURE_HEADER].partition("=")[2]
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        return f"signature does not match the body and timestamp; {how} with the hook's secret"
    return None


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (``whsec_<base64>``; raw text otherwise)."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def check_standard(
    headers: Mapping[str, str], body: bytes, secret: str, tolerance_s: float, now: float
) -> str | None:
    how = (
        "send webhook-id, webhook-timestamp and webhook-signature: v1,<base64 HMAC-SHA256 "
        "over '<id>.<timestamp>.' + body> (the Standard Webhooks specification)"
    )
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or ts is None or not signatures:
        return f"missing webhook-id, webhook-timestamp or webhook-signature header; {how}"
    problem = _timestamp(ts, "webhook-timestamp", tolerance_s, now)
    if problem is not None:
        return problem
    signed = f"{msg_id.strip()}.{ts.strip()}.".encode() + body
    expected = base64.b64encode(
        hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    ).decode()
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(expected.encode(), value.encode()):
            return None
    return f"no v1 signature in webhook-signature matches the body; {how} with the hook's secret"


def check_github(
    headers: Mapping[str, str], body: bytes, secret: str, tolerance_s: float, now: float
) -> str | None:
    signature = headers.get("x-hub-signature-256")
    how = "GitHub sends X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>"
    if signature is None:
        return f"missing X-Hub-Signature-256 header; {how} (set the webhook's secret)"
    scheme, _, given = signature.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        return f"X-Hub-Signature-256 must look like 'sha256=<hex>'; {how}"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        return (
            "X-Hub-Signature-256 does not match the body; is the hook's secret the one set "
            "on GitHub?"
        )
    return None


#: Each scheme's check, and the header carrying its delivery id (None: the generic ones).
SCHEMES: dict[str, tuple[Check, str | None]] = {
    "evflow": (check_evflow, None),
    "standard": (check_standard, "webhook-id"),
    "github": (check_github, "x-github-delivery"),
}
