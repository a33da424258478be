"""The reference pages cannot go stale: ``docs/reference/options.md`` and ``fixtures.md`` against the plugin.

The option table in ``options.md`` is generated from :data:`pytest_meshcheck.settings.OPTIONS`; after
changing an option, regenerate it with ``python tests/plugin/test_reference_docs.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from pytest_meshcheck.settings import OPTIONS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"
BEGIN = "<!-- BEGIN GENERATED: options table (python tests/plugin/test_reference_docs.py) -->"
END = "<!-- END GENERATED: options table -->"


def options_table() -> str:
    """The Markdown table of every option, in registration order."""
    rows = [
        "| Command line | Environment variable | ini key | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for opt in OPTIONS:
        cli = f"`{opt.cli}`" if opt.flag else f"`{opt.cli}=VALUE`"
        default = "off" if opt.flag else (f"`{opt.default}`" if opt.default is not None else "-")
        meaning = opt.help.replace("|", "\\|")
        rows.append(f"| {cli} | `{opt.env}` | `{opt.ini}` | {default} | {meaning} |")
    return "\n".join(rows)


def generated_part(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip()


def test_options_page_lists_every_option_as_generated() -> None:
    text = (DOCS / "options.md").read_text(encoding="utf-8")

    assert generated_part(text) == options_table(), (
        "docs/reference/options.md is out of date; run: python tests/plugin/test_reference_docs.py"
    )
    for opt in OPTIONS:
        assert text.count(f"`{opt.env}`") >= 1
        assert opt.cli in text


def test_fixtures_page_documents_every_fixture_with_its_scope(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures", "-v")
    output = result.stdout.str()
    section = output[output.index("fixtures defined from pytest_meshcheck.plugin") :]
    section = section[: section.find("\n---") if "\n---" in section else len(section)]
    defined = {
        m.group(1): m.group(2) or "function"
        for m in re.finditer(r"^(\w+)(?: \[(\w+) scope\])? -- \S*pytest_meshcheck/plugin\.py:\d+$", section, re.M)
    }
    text = (DOCS / "fixtures.md").read_text(encoding="utf-8")
    documented = dict(re.findall(r"^## `(\w+)`\n\n- \*\*Scope:\*\* (\w+)", text, re.M))

    assert len(defined) >= 7, output
    assert documented == defined
    for name in defined:
        body = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for field in ("**Scope:**", "**Type:**", "**What it does:**", "**Teardown:**"):
            assert field in body, f"fixtures.md: {name} lacks {field}"
        assert f"| `{name}` | {defined[name]} |" in text


def regenerate() -> None:
    """Rewrite the generated table in ``options.md``."""
    path = DOCS / "options.md"
    text = path.read_text(encoding="utf-8")
    new = text[: text.index(BEGIN) + len(BEGIN)] + "\n" + options_table() + "\n" + text[text.index(END) :]
    path.write_text(new, encoding="utf-8")
    print(f"regenerated {path}", file=sys.stderr)


if __name__ == "__main__":
    regenerate()
