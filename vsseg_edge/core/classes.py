"""Class files: the user's own classes, names, colours and the label value that means "not labelled".

A class file is how a model or a dataset with classes other than Cityscapes' and CamVid's enters the
project. `train` (the recipe's `classes:`), `eval`, `run`, `bench` and `import` accept it wherever they
accept a class-set name, and a dataset folder may carry one at its root (`classes.yaml`, `classes.json`,
`classes.txt`), so `calibrate` and every other reader of that folder see the same classes.

Formats (YAML or JSON; class ids are the positions in the list, 0..N-1):

    name: parking-lot            # optional; default: the file's stem
    ignore_index: 255            # optional; the value in label PNGs that means "not labelled"
    classes:
      - {name: road, color: [128, 64, 128]}     # RGB, or "#rrggbb"
      - {name: car, color: "#00008e"}
      - person                                  # no colour: a fixed generated one

or just the list (`[road, car, person]`), or a `.txt` file with one name per line (jetson-inference's
label files). The ignore value must not be a class id (it is >= the number of classes); readers map it to
the internal ignore index 255, as CamVid's void 11 is.

Colours that are not given come from one fixed generator, so the same names always get the same colours
on every machine and in every artifact.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import VssegError
from .labels import IGNORE_INDEX, LABEL_SETS, LabelSet, label_set_for

CLASS_FILE_SUFFIXES = (".yaml", ".yml", ".json", ".txt")
DATASET_CLASS_FILES = ("classes.yaml", "classes.yml", "classes.json", "classes.txt")
MAX_CLASSES = 255  # ids are uint8 and 255 is the ignore index


def _colour(value, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
            except ValueError:
                pass
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return tuple(value)  # type: ignore[return-value]
    raise VssegError(f'{where}: colour {value!r}; expected [R, G, B] with values 0..255 or "#rrggbb"')


def _read(path: Path):
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise VssegError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise VssegError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_class_file(path: str | Path) -> LabelSet:
    """Read a class file (see the module docstring) into a LabelSet, or raise one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise VssegError(f"{path}: class file not found")
    if path.suffix.lower() not in CLASS_FILE_SUFFIXES:
        raise VssegError(f"{path}: expected a class file ending in {', '.join(CLASS_FILE_SUFFIXES)}")
    data = _read(path)
    where = str(path)
    if isinstance(data, list):
        data = {"classes": data}
    if not isinstance(data, dict):
        raise VssegError(f"{where}: expected a list of class names or a mapping with 'classes'")
    unknown = sorted(set(data) - {"name", "classes", "ignore_index"})
    if unknown:
        raise VssegError(f"{where}: unknown key(s) {unknown}; valid keys: ['classes', 'ignore_index', 'name']")
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise VssegError(f"{where}: 'classes' must be a non-empty list of names or {{name, color}} entries")
    if len(entries) > MAX_CLASSES:
        raise VssegError(f"{where}: {len(entries)} classes; at most {MAX_CLASSES} fit uint8 label maps")
    names, colours = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            bad = sorted(set(entry) - {"name", "color", "colour"})
            if bad or "name" not in entry:
                raise VssegError(f"{where}: class {i}: expected {{name, color}}, got keys {sorted(entry)}")
            name, colour = entry["name"], entry.get("color", entry.get("colour"))
        else:
            name, colour = entry, None
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise VssegError(f"{where}: class {i}: expected a name, got {name!r}")
        names.append(str(name).strip())
        colours.append(None if colour is None else _colour(colour, f"{where}: class {i} ({name})"))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise VssegError(f"{where}: class name(s) {dup} appear more than once")
    ignore = data.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore, int) or isinstance(ignore, bool) or not len(names) <= ignore <= 255:
        raise VssegError(
            f"{where}: ignore_index {ignore!r}; expected an integer in {len(names)}..255 "
            "(a value that is not a class id)"
        )
    ls = label_set_for(names, colours, name=str(data.get("name") or path.stem))
    return LabelSet(ls.name, ls.classes, ls.palette, label_ignore=ignore)


def is_class_file(text: str | Path) -> bool:
    return Path(str(text)).suffix.lower() in CLASS_FILE_SUFFIXES


def resolve_classes(spec: str | Path | LabelSet, base: str | Path | None = None) -> LabelSet:
    """A class-set name (cityscapes, camvid) or a class file (relative paths against `base`) → LabelSet."""
    if isinstance(spec, LabelSet):
        return spec
    text = str(spec)
    if text in LABEL_SETS:
        return LABEL_SETS[text]
    if is_class_file(text):
        path = Path(text)
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        return load_class_file(path)
    raise VssegError(
        f"classes {text!r}: expected one of {sorted(LABEL_SETS)} or a class file ({', '.join(CLASS_FILE_SUFFIXES)})"
    )


def dataset_class_file(root: str | Path) -> Path | None:
    """The class file a dataset folder carries at its root, if any."""
    for name in DATASET_CLASS_FILES:
        path = Path(root) / name
        if path.is_file():
            return path
    return None


def check_model_classes(label_set: LabelSet, model_classes: list[str], where: str) -> LabelSet:
    """A class file given for a model must have as many classes as the model predicts; its names and colours
    then replace the model's (for overlays, masks and reports)."""
    if model_classes and len(model_classes) != label_set.num_classes:
        raise VssegError(
            f"{where}: the model predicts {len(model_classes)} classes, the class file "
            f"{label_set.name!r} has {label_set.num_classes}"
        )
    return label_set
