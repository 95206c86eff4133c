"""Named checkpoints on money-moving paths. In production nothing is registered and a checkpoint
is one dict lookup; tests register a hook (raise, or kill the database backend) to prove that a
transaction cut at that point leaves nothing half-written."""

from __future__ import annotations

from collections.abc import Callable

_hooks: dict[str, Callable[[], None]] = {}


def checkpoint(name: str) -> None:
    hook = _hooks.get(name)
    if hook is not None:
        hook()


def inject(name: str, hook: Callable[[], None]) -> None:
    _hooks[name] = hook


def clear() -> None:
    _hooks.clear()
