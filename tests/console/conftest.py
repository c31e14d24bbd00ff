"""Support-console tests sign licenses with the session key of the licenses tests."""

from tests.licenses.conftest import _signing_key_files, signing_key_file  # noqa: F401
