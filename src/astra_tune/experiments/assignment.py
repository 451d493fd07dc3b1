"""Which arm a user gets: a salted hash of the unit id, sticky and monotone in the weights.

Sticky: the arm is a pure function of (experiment salt, unit id, weights), so the same user
gets the same arm on every API, every replica and after restarts, with nothing stored.
Monotone: the first hash decides "control or not" against the candidates' total weight,
so raising a candidate's weight only moves users from control into a candidate, never the
other way (GrowthBook and Statsig hash the same way; a fresh random draw per request, as
Open WebUI's arena does, gives a user a different model on every message). The second
hash picks among the candidates in proportion to their weights.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

UnitKind = Literal["user", "header", "api_key", "random"]


@dataclass(frozen=True)
class Unit:
    """Who a request is counted for: the id and where it came from."""

    id: str
    kind: UnitKind

    @property
    def hashed(self) -> str:
        """What is stored and shown: never the raw id (it may be an e-mail or a key)."""
        return hashlib.sha256(f"{self.kind}:{self.id}".encode()).hexdigest()[:16]


def request_unit(
    *, user: str | None = None, header: str | None = None, api_key: str | None = None
) -> Unit:
    """The unit id by precedence: the body's user (OpenAI's `safety_identifier` or
    `user`), the X-Astra-User header, the API key; else a random one for this request."""
    if user:
        return Unit(user, "user")
    if header:
        return Unit(header, "header")
    if api_key:
        return Unit(api_key, "api_key")
    return Unit(secrets.token_hex(8), "random")


def _uniforms(salt: str, unit_id: str) -> tuple[float, float]:
    digest = hashlib.sha256(f"{salt}\x00{unit_id}".encode()).digest()
    scale = float(2**64)
    return int.from_bytes(digest[:8], "big") / scale, int.from_bytes(digest[8:16], "big") / scale


def assign(salt: str, unit_id: str, weights: dict[str, float], control: str) -> str:
    """The arm for `unit_id`; `weights` are percentages summing to 100, `control` one key."""
    first, second = _uniforms(salt, unit_id)
    treated = sum(w for arm, w in weights.items() if arm != control)
    if first * 100 >= treated:
        return control
    candidates = [(arm, w) for arm, w in weights.items() if arm != control and w > 0]
    total = sum(w for _, w in candidates)
    point = second * total
    for arm, weight in candidates:
        if point < weight:
            return arm
        point -= weight
    return candidates[-1][0]  # rounding at the very top of the range
