"""Operator mistakes: said in one line, never as a traceback.

::

    OperatorError            a setting, file or database the operator must fix before start-up
    ├── SettingsError        (cds_service.config) a CDS_* variable is malformed or insecure
    └── StartupError         content, discovery or database unusable at start-up
"""

from __future__ import annotations


class OperatorError(Exception):
    """Something in the set-up must be fixed; ``str(error)`` is the one line to show."""


class StartupError(OperatorError):
    """The card content, the discovery file or the database cannot be used."""
