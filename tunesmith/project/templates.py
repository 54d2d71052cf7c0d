"""Use-case templates: the list, and making a project folder from one.

Owns: the template table (`templates/catalog.yaml`: name and one line on each), and `init_project`,
which copies a template's `tunesmith.yaml`, README and sample data into a new folder and names the
project after it. Does not own: the templates' contents (the files under `templates/`, whose sample data
`scripts/make_template_data.py` writes) or checking a project file (`spec`). No torch.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunesmith.config import ConfigError
from tunesmith.project.spec import PROJECT_FILE, STATE_DIR

TEMPLATES_DIR = Path(__file__).parent / "templates"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the project name's pattern in `ProjectSpec`


@dataclass(frozen=True)
class Template:
    name: str
    task: str  # generation or classification
    summary: str  # one line: who it is for and what it learns

    @property
    def directory(self) -> Path:
        return TEMPLATES_DIR / self.name


def list_templates() -> list[Template]:
    """Every template, in catalog order."""
    raw = yaml.safe_load((TEMPLATES_DIR / "catalog.yaml").read_text(encoding="utf-8"))
    return [Template(**entry) for entry in raw["templates"]]


def init_project(directory: Path, template: str) -> Path:
    """Create `directory` from `template`: tunesmith.yaml, README.md, data/; returns the project file.

    The project is named after the folder. Raises ConfigError for an unknown template, a folder that
    exists and is not empty, or a folder name that cannot name an adapter.
    """
    chosen = {entry.name: entry for entry in list_templates()}.get(template)
    if chosen is None:
        names = ", ".join(entry.name for entry in list_templates())
        raise ConfigError(f"--template {template}: no such template; choose one of {names}")
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory}: exists and is not empty; choose a new folder")
    name = directory.resolve().name
    if not _NAME.match(name):
        raise ConfigError(
            f"{directory}: the project takes the folder's name, and {name!r} cannot name an adapter "
            "(letters, digits, '.', '_' and '-', starting with a letter or digit)"
        )
    shutil.copytree(chosen.directory, directory, dirs_exist_ok=True)
    project_file = directory / PROJECT_FILE
    text = project_file.read_text(encoding="utf-8")
    project_file.write_text(re.sub(r"(?m)^name: .*$", f"name: {name}", text, count=1), encoding="utf-8")
    (directory / ".gitignore").write_text(f"{STATE_DIR}/\n", encoding="utf-8")
    return project_file
