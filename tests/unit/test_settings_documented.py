"""Every ``COVE_*`` setting is in the README's configuration reference."""

from __future__ import annotations

from pathlib import Path

from cove.core.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    section = text[text.index("## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `COVE_")]
    missing = [f"COVE_{name.upper()}" for name in Settings.model_fields
               if not any(f"`COVE_{name.upper()}`" in row for row in rows)]  # fmt: skip
    assert not missing, f"not in README's Configuration table: {missing}"
