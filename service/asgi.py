"""ASGI entry point for uvicorn (`rewards api`, or `uvicorn service.asgi:app`): imported by each
uvicorn worker process, which sets up its own logging and, when an endpoint is configured, tracing."""

from service.app import create_app
from service.kit.config import get_settings
from service.kit.observability.logging import configure_logging
from service.kit.observability.tracing import setup_tracing

configure_logging(get_settings().log_level, get_settings().log_json)
setup_tracing("rewards-api")
app = create_app()
