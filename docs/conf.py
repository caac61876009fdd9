"""Sphinx configuration: ``tox -e docs`` builds the site and runs every example as a doctest.

tox installs the package into the docs environment; autodoc and the doctests
use that installed copy, so the docs test what users get.
"""

from __future__ import annotations

import inherit

project = "inherit"
author = "the inherit contributors"
copyright = "the inherit contributors"
release = inherit.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "requirements.txt", "README.md"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"inherit {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# Examples import what they use, so they can be copied as they are. Only the
# optional numpy recipe needs help: it is skipped (`:skipif: np is None`) without numpy.
doctest_global_setup = """
try:
    import numpy as np
except ImportError:
    np = None
"""
