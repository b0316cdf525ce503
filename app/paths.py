"""Where the project finds data that is not in the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def ml100k_dir() -> Path:
    """MovieLens 100K folder: DEEPREC_ML100K_DIR, else ../shared/data/ml-100k beside the repo."""
    env = os.environ.get("DEEPREC_ML100K_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "ml-100k"


def ml100k_available() -> bool:
    return (ml100k_dir() / "u.data").is_file()
