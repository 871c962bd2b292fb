"""``mcc init``: write a small, runnable starter project from ``mcc/project/starter/``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from mcc.errors import ProjectError

#: Files written by :func:`init_project`, in order.
TEMPLATE_FILES: tuple[str, ...] = ("points.py", "entry.py", "combine_data.py", "mcc.toml")


def _template_text(name: str) -> str:
    """The text of one template shipped in the ``mcc`` package (works from a wheel too)."""
    try:
        return (resources.files("mcc.project") / "starter" / name).read_text(encoding="utf-8")
    except (OSError, TypeError, ModuleNotFoundError):
        # mcc may be a namespace package during development; fall back to the source tree.
        try:
            return (Path(__file__).parent / "starter" / name).read_text(encoding="utf-8")
        except OSError as exc:
            raise ProjectError(f"The mcc installation is missing its template {name} "
                               f"(mcc/project/starter/{name}); reinstall mcc, e.g. "
                               f"`pip install --force-reinstall materialsCloudCompute`.") from exc


def init_project(target: Path) -> list[Path]:
    """Create ``target`` if needed and write points.py, entry.py, combine_data.py and mcc.toml into it.

    Refuses (ProjectError, nothing written) if any of those files already exists.
    Returns the paths written.
    """
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise ProjectError(f"Cannot create a project at {target}: it is a file, not a folder. "
                           f"Choose another path, e.g. `mcc init {target.with_suffix('')}-project`.")
    existing = [target / name for name in TEMPLATE_FILES if (target / name).exists()]
    if existing:
        listing = ", ".join(str(p) for p in existing)
        raise ProjectError(f"Refusing to overwrite existing files in {target}: {listing}. "
                           f"Move or delete them, or run `mcc init` on a new folder.")
    texts = {name: _template_text(name) for name in TEMPLATE_FILES}
    written: list[Path] = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            path = target / name
            with path.open("x", encoding="utf-8") as fh:  # "x": never clobber a racing write
                fh.write(text)
            written.append(path)
    except FileExistsError as exc:
        raise ProjectError(f"Refusing to overwrite {exc.filename}, which appeared while "
                           f"`mcc init` was writing {target}. Move or delete it and retry.") from exc
    except OSError as exc:
        raise ProjectError(f"Cannot write the new project into {target}: "
                           f"{exc.strerror or exc} ({exc.filename or target}). Check the folder's "
                           f"permissions and free space, or choose another path.") from exc
    return written
