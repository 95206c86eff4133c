"""ASGI entry point for uvicorn (`rewards api`, or `uvicorn service.asgi:app`)."""

from service.app import create_app
from service.config import get_settings
from service.logging import configure_logging

configure_logging(get_settings().log_level, get_settings().log_json)
app = create_app()
