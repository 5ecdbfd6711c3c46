"""JSON files FailScope writes and reads back (summaries, ground truth, run state): a damaged one is one sentence
that names it and says what to do, never a traceback from the JSON decoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: str | Path, *, fix: str, shown: str | None = None) -> Any:
    """The JSON value in `path`; a truncated or undecodable file is a ValueError `<shown> is not valid JSON (<why>);
    <fix>` (`shown` defaults to the path)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{shown or path} is not valid JSON ({exc}); {fix}") from None
