"""Shared pytest set-up. Stage-specific fixtures live in tests/support/."""
import os

# One Label Studio for the whole session. Imported into each test module instead, the fixture was
# registered once per module: a "session" server per module, all sharing one home and data dir.
pytest_plugins = ["tests.support.label_studio"]

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
