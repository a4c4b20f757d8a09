"""Shared pytest set-up. Stage-specific fixtures live in tests/support/."""
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
