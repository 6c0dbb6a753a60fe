"""A zoo model as a folder to train in, for a user without the clone: `pycaffe-lite example NAME DIR`.

    from pycaffe_lite.zoo import example
    made = example.write_example("lenet", "work")      # work/models/lenet/*, work/data/digits/*_lmdb
    print(made.train_command)                          # cd work && pycaffe-lite train --solver ...

DIR gets the clone's layout: the model's folder at DIR/models/NAME (its prototxts and readme,
copied unchanged) and the embedded data set its readme names (`dataset: digits`) built at the
path its nets read.  The zoo's paths are relative to the working directory, as Caffe's are, and
the clone runs them from its root; so the written files run from DIR, exactly as the clone's
README commands run from the clone.
"""
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..data import digits
from ..io_utils import write_bytes_atomic
from .manifest import get_model

# a readme's `dataset:` value -> (the folder its nets read, relative to the working directory; builder)
EMBEDDED_DATA = {"digits": ("data/digits", digits.build)}
SHIPPED_SUFFIXES = (".prototxt", ".md")   # what the package ships of a model folder (never weights)


@dataclass
class Example:
    """What write_example made: the folder, the model's copy in it, the data built, the solver to run."""
    dest: Path
    model_folder: Path
    solver: str                    # relative to dest, as the train command takes it
    data: list = field(default_factory=list)

    @property
    def train_command(self):
        train = f"pycaffe-lite train --solver {shlex.quote(self.solver)}"
        if self.dest.resolve() == Path.cwd().resolve():
            return train
        return f"cd {shlex.quote(str(self.dest))} && {train}"


def main_solver(folder):
    """The model's solver: solver.prototxt, else the shortest-named *solver*.prototxt (lenet_solver)."""
    plain = folder / "solver.prototxt"
    if plain.exists():
        return plain
    found = sorted(folder.glob("*solver*.prototxt"), key=lambda p: (len(p.name), p.name))
    if not found:
        raise ValueError(f"{folder} has no solver prototxt to train with")
    return found[0]


def copy_model_folder(model, target, force=False):
    """Copy the model's prototxts and readme into `target`; a different file already there is an error
    unless `force` (an identical one is left as it is)."""
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(model.folder.iterdir()):
        if not source.is_file() or source.suffix not in SHIPPED_SUFFIXES:
            continue
        payload, dest = source.read_bytes(), target / source.name
        if dest.exists() and dest.read_bytes() == payload:
            continue
        if dest.exists() and not force:
            raise FileExistsError(f"{dest} exists and differs from the zoo's {source.name} "
                                  "(pass --force to overwrite it)")
        write_bytes_atomic(dest, payload)


def write_example(name, dest, root=None, force=False):
    """Write zoo model `name` and the embedded data its readme names into `dest`; an Example."""
    model = get_model(name, root)
    dest = Path(dest)
    target = dest / "models" / model.name
    copy_model_folder(model, target, force)
    dataset = model.meta.get("dataset")
    built = []
    if dataset:
        if dataset not in EMBEDDED_DATA:
            raise ValueError(f"{model.folder / 'readme.md'}: dataset '{dataset}' is not one the package "
                             f"embeds (known: {', '.join(sorted(EMBEDDED_DATA))})")
        folder, builder = EMBEDDED_DATA[dataset]
        built = list(builder(dest / folder, force=force))
    solver = main_solver(target).relative_to(dest)
    return Example(dest, target, solver.as_posix(), built)


__all__ = ["EMBEDDED_DATA", "Example", "main_solver", "write_example"]
