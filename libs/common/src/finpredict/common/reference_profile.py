"""A model version's reference profile as the registry serves it: checked, then decoded.

The training pipeline registers each version with its drift reference profile (drift_core's
``Profile.to_bytes()``) and the registry records the profile's sha256 at registration. Whoever
reads a version (the monitor's profile fetcher, the gateway's catalog) gets the profile with
:func:`verified_profile`: the bytes checked against the recorded sha256, then decoded by the
caller's decoder (``drift_core.Profile.from_bytes``; this library does not depend on drift_core).
A failure is a :class:`ProfileError` whose ``reason`` is a metric label and whose ``final`` says
whether asking again can help.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from finpredict.api.registry.v1 import registry_pb2

T = TypeVar("T")


class ProfileError(Exception):
    """No usable profile; ``reason``: ``no_profile``, ``checksum``, ``invalid`` or a fetch failure
    (``not_found``, ``unavailable``, ``denied``, ``error``); ``final`` when retrying cannot help."""

    def __init__(self, reason: str, detail: str, final: bool = False) -> None:
        super().__init__(detail)
        self.reason = reason
        self.final = final


@dataclass(frozen=True)
class VerifiedProfile(Generic[T]):
    """A version's profile: decoded, and its bytes with the sha256 they matched."""

    profile: T
    blob: bytes
    sha256: str


def verified_profile(version: registry_pb2.ModelVersion, decode: Callable[[bytes], T]) -> VerifiedProfile[T]:
    """``version``'s reference profile, its sha256 checked against the registry's record and decoded
    by ``decode`` (whose ``ValueError`` means the bytes are not a profile)."""
    name = f"{version.model} v{version.version}"
    if not version.reference_profile:
        raise ProfileError("no_profile", f"{name} was registered without one", final=True)
    blob = bytes(version.reference_profile)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != version.reference_profile_sha256:
        raise ProfileError(
            "checksum",
            f"the profile's sha256 is {digest}, the registry recorded "
            f"{version.reference_profile_sha256 or 'none'}",
        )
    try:
        profile = decode(blob)
    except ValueError as exc:  # drift_core.DriftCoreError is a ValueError
        raise ProfileError("invalid", f"not a drift_core profile ({exc})") from None
    return VerifiedProfile(profile, blob, digest)
