"""The README's "What it looks like" shows the pictures the browser tests take: each one it names exists."""

from __future__ import annotations

import re

from sidecar.config import ROOT

from .conftest import SCREENSHOTS


def test_every_picture_the_readme_shows_is_in_docs_screenshots():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r'src="docs/screenshots/([\w-]+\.png)"', readme))
    assert len(shown) >= 10, "the README's 'What it looks like' section lost its pictures"
    missing = sorted(name for name in shown if not (SCREENSHOTS / name).is_file())
    assert not missing, f"run the browser tests (tests/browser) to take: {missing}"
