"""Prompt templates: the built-in single template and ensemble, and user template files.

A template is a sentence with one ``{}`` where the class name goes. Class names are shown to the
text encoder with underscores as spaces (``great_white_shark`` -> ``great white shark``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sage_cli.encode_text.textfile import read_utf8
from sage_cli.errors import SageError

SINGLE = ("a photo of a {}.",)

# In the spirit of CLIP's ImageNet prompt ensemble: several photo styles, sizes and renderings,
# so the pooled class vector is not tied to one phrasing.
ENSEMBLE = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a dark photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a rendering of a {}.",
    "a drawing of a {}.",
    "a painting of a {}.",
    "a sculpture of a {}.",
    "art of the {}.",
    "a {} in a photo.",
)

BUILTIN = {"single": SINGLE, "ensemble": ENSEMBLE}
NO_TEMPLATES = "none"


@dataclass(frozen=True)
class TemplateSet:
    """A named list of templates: "single", "ensemble", "none" or the path of a templates file."""

    name: str
    templates: tuple[str, ...]

    def render(self, class_name: str) -> list[str]:
        shown = display_name(class_name)
        return [template.replace("{}", shown) for template in self.templates]


def display_name(class_name: str) -> str:
    """The class name as the text encoder sees it: underscores become spaces."""
    return " ".join(class_name.replace("_", " ").split())


def load_templates(spec: str) -> TemplateSet:
    """``single``, ``ensemble``, ``none`` or a file with one template per line (``#`` comments)."""
    key = spec.strip()
    if key.lower() == NO_TEMPLATES:
        return TemplateSet(NO_TEMPLATES, ())
    if key.lower() in BUILTIN:
        return TemplateSet(key.lower(), BUILTIN[key.lower()])
    path = Path(key).expanduser()
    if not path.is_file():
        raise SageError(f"--templates {spec}: not single, ensemble, none or an existing file")
    return TemplateSet(str(path.resolve()), parse_templates(path))


def parse_templates(path: Path) -> tuple[str, ...]:
    templates = []
    for number, raw in enumerate(read_utf8(path).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.count("{}") != 1:
            raise SageError(f"{path}:{number}: a template needs exactly one {{}} for the class name: {line!r}")
        templates.append(line)
    if not templates:
        raise SageError(f"{path}: holds no templates (one per line, with {{}} for the class name)")
    return tuple(templates)
