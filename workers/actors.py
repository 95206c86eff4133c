"""The actors `rewards worker` runs. Imported by `dramatiq workers.actors`."""
from workers.broker import broker  # noqa: F401  (configures the Redis broker before any actor exists)
