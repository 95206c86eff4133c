"""The reward catalog as files: its model (model.py), the loader (loader.py) and the demo catalog."""

from pathlib import Path

DEMO_CATALOG = Path(__file__).parent / "demo"
