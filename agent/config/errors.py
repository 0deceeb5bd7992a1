"""SettingsError: a setting we cannot use, raised by every reader of settings (file, env, conf)."""

from __future__ import annotations


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the setting and the source."""
