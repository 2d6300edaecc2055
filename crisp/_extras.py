"""One clear error when a study subpackage is imported without its extra."""

from __future__ import annotations

import importlib.util


def require(subpackage: str, modules: tuple[str, ...]) -> None:
    """Raise ImportError naming every missing module and the install command, if any is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{subpackage} needs {', '.join(missing)}, which the library alone does not install: "
                          f"pip install 'crisp[study]'")
