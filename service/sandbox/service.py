"""The sandbox: what a sandbox key's redemptions get instead of real rewards, and the magic phone
numbers that make them fail on purpose. Documented for integrators in docs/integration.md.

A sandbox redemption runs the same validation, limits and idempotency as a real one. Its reward is a
test code drawn from no pool (derived from the redemption id, so nothing is stored) or a card minted
with the sandbox mark, which partners cannot verify or exchange. It takes no budget, writes no
reconciliation record, and its SMS goes to the sandbox file only, whatever provider is configured."""

from __future__ import annotations

import base64
import uuid

from service.kit.security.crypto import get_vault

# Valid Kazakh mobile numbers (the +7 700 range), in E.164 as the API normalises them.
OUT_OF_STOCK = "+77000000001"  # the redemption is refused: 409 out_of_stock
SMS_FAILED = "+77000000002"  # the SMS is refused by the provider: the redemption ends `failed`
SMS_DELAYED_RECEIPT = "+77000000003"  # `sent` at once, `delivered` only after the receipt delay


def sandbox_code(redemption_id: uuid.UUID) -> str:
    """The test code of a sandbox code reward: `TEST-` and 8 characters keyed by the service's
    fingerprint key, so that it looks like a code and cannot be guessed from the redemption id."""
    digest = get_vault().fingerprint(f"sandbox-code:{redemption_id}")
    return "TEST-" + base64.b32encode(digest[:5]).decode()
