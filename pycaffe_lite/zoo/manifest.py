"""The model zoo on disk: one folder per model with a readme.md in BVLC's format.

A readme starts with a YAML front matter of `key: value` lines (BVLC's
`scripts/download_model_binary.py` reads the same):

    ---
    name: BAIR/BVLC CaffeNet Model
    caffemodel: bvlc_reference_caffenet.caffemodel
    caffemodel_url: http://dl.caffe.berkeleyvision.org/bvlc_reference_caffenet.caffemodel
    sha1: 4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46
    license: unrestricted
    weights_from: BVLC, trained with BVLC Caffe on ILSVRC 2012
    ---

Only flat `key: value` pairs are read (no nested YAML, nothing evaluated), so
a readme from anywhere is safe to parse.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_SHA1 = re.compile(r"^[0-9a-fA-F]{40}$")
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s?(.*)$")
# the weights' file name as BVLC's readmes give it (bvlc_alexnet.caffemodel, ResNet-50-model.caffemodel):
# no folder, no leading '.', no YAML tag (!!), anchor (&) or alias (*)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
# the shipped zoo: prototxts, solvers and readmes (package data; never weights)
PACKAGE_ZOO = Path(__file__).resolve().parent / "models"


def default_root():
    """Where the zoo lives: $PYCAFFE_LITE_MODELS, else the zoo inside the package (pycaffe_lite/zoo/models,
    which the clone's top-level models/ links to), wherever the package is installed."""
    env = os.environ.get("PYCAFFE_LITE_MODELS")
    if env:
        return Path(env)
    return PACKAGE_ZOO


def parse_front_matter(text, source="readme.md"):
    """(metadata dict, body text) of a zoo readme; empty values become None."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise ValueError(f"{source}: a zoo readme starts with a '---' line and YAML front matter "
                         "(name, caffemodel, caffemodel_url, sha1, license)")
    meta = {}
    for number, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if stripped == "---":
            body = "\n".join(lines[number:])
            break
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY.match(stripped)
        if not match:
            raise ValueError(f"{source}:{number}: expected 'key: value' in the front matter, got {line!r}")
        key, value = match.group(1), match.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        meta[key] = value or None
    else:
        raise ValueError(f"{source}: the front matter has no closing '---' line")
    caffemodel = meta.get("caffemodel")
    if caffemodel is not None and (not _PLAIN_NAME.match(caffemodel) or caffemodel.strip(".") == ""):
        raise ValueError(f"{source}: caffemodel must be a plain file name (letters, digits, '_', '-', '+', "
                         f"'.'), which is written inside the model's folder; got {caffemodel!r}")
    sha1 = meta.get("sha1")
    if sha1 is not None and not _SHA1.match(sha1):
        raise ValueError(f"{source}: sha1 must be 40 hexadecimal digits, got {sha1!r}")
    if sha1:
        meta["sha1"] = sha1.lower()
    return meta, body


@dataclass
class ZooModel:
    """One model folder: its readme's metadata and where its files are."""
    name: str
    folder: Path
    meta: dict = field(default_factory=dict)
    body: str = ""
    error: str = None          # why the readme could not be read (list_models keeps going)

    @property
    def title(self):
        return self.meta.get("name") or self.name

    @property
    def caffemodel(self):
        return self.meta.get("caffemodel") or f"{self.name}.caffemodel"

    @property
    def url(self):
        return self.meta.get("caffemodel_url")

    @property
    def sha1(self):
        return self.meta.get("sha1")

    @property
    def license(self):
        return self.meta.get("license")

    @property
    def weights_from(self):
        return self.meta.get("weights_from")

    @property
    def weights_path(self):
        """Where the weights go: the model's folder; for the zoo shipped inside the package (read-only
        once installed) ./models/<name>/, where the prototxts' paths, relative to the working
        directory as Caffe's are, look for them (from the clone's root, the same folder)."""
        if self.folder.resolve().parent == PACKAGE_ZOO:
            return Path("models") / self.name / Path(self.caffemodel).name
        return self.folder / Path(self.caffemodel).name

    def file(self, which):
        """Path of 'deploy', 'train_val' or 'solver' (None when the folder has none)."""
        path = self.folder / f"{which}.prototxt"
        return path if path.exists() else None

    @property
    def architecture(self):
        """The pycaffe_lite.zoo.architectures spec of this model, if it is one of ours."""
        from . import architectures
        return architectures.MODELS.get(self.name)


def load_model(folder):
    """The ZooModel of a folder holding a readme.md."""
    folder = Path(folder)
    readme = folder / "readme.md"
    if not readme.exists():
        alt = folder / "README.md"
        readme = alt if alt.exists() else readme
    try:
        text = readme.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no readme.md: not a zoo model folder") from None
    meta, body = parse_front_matter(text, str(readme))
    return ZooModel(folder.name, folder, meta, body)


def list_models(root=None):
    """Every model folder (one holding a readme.md) under `root`, sorted by name."""
    root = Path(root) if root is not None else default_root()
    if not root.is_dir():
        raise FileNotFoundError(f"no model zoo at {root} (set --root or $PYCAFFE_LITE_MODELS)")
    models = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and ((entry / "readme.md").exists() or (entry / "README.md").exists()):
            try:
                models.append(load_model(entry))
            except ValueError as exc:   # one bad readme should not hide the rest of the zoo
                models.append(ZooModel(entry.name, entry, error=str(exc)))
    return models


def get_model(name, root=None):
    """A zoo model by folder name under `root`, or by the path of its folder."""
    candidate = Path(name)
    if candidate.is_dir() and ((candidate / "readme.md").exists() or (candidate / "README.md").exists()):
        return load_model(candidate)
    root = Path(root) if root is not None else default_root()
    folder = root / name
    if folder.is_dir():
        return load_model(folder)
    known = [m.name for m in list_models(root)] if root.is_dir() else []
    raise ValueError(f"no zoo model '{name}' under {root}; known: {', '.join(known) or 'none'}")
