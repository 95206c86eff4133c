"""Every domain's models, so that the metadata (Alembic, tests, the ORM's mapper configuration) sees
the whole schema. Domain models import only `service.kit.db.base`, never `service.kit.db.engine`."""

from __future__ import annotations

import service.auth.models  # noqa: F401
import service.balances.models  # noqa: F401
import service.campaigns.models  # noqa: F401
import service.cards.models  # noqa: F401
import service.catalog.models  # noqa: F401
import service.console.models  # noqa: F401
import service.delivery.models  # noqa: F401
import service.holders.models  # noqa: F401
import service.kit.db.retention  # noqa: F401
import service.kit.messaging.outbox  # noqa: F401
import service.kit.security.crypto_models  # noqa: F401
import service.kit.security.throttle  # noqa: F401
import service.ledger.models  # noqa: F401
import service.pools.models  # noqa: F401
import service.redemptions.models  # noqa: F401
