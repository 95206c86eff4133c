"""Imports every domain's models so that metadata (Alembic, tests) sees the whole schema."""


def load_all_models() -> None:
    import service.auth.models  # noqa: F401
    import service.cards.models  # noqa: F401
    import service.catalog.models  # noqa: F401
    import service.delivery.models  # noqa: F401
    import service.ledger.models  # noqa: F401
    import service.outbox  # noqa: F401
    import service.pools.models  # noqa: F401
    import service.redemptions.models  # noqa: F401
