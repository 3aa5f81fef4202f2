"""Joint and action descriptions ("Name: one-sentence definition", one line per item) shipped with the package.

Files (``trgnet_fast/text/descriptions/``), written for this project:

    joints_PKU.txt        25  Kinect v2 order (PKU-MMD, NTU RGB+D), matches the PKU bones of skeletons.py
    joints_BODY_25.txt    25  OpenPose BODY_25 order (MCFS), matches graph.py's BODY_25 bones
    joints_LARA.txt       19  LARa order: **inferred** from graph.py's LARA bones (root 0 with two 4-joint
                              legs 1-4 / 5-8 and the upper back 9, which carries a 4-joint arm chain 10-12-13-14,
                              a leaf 11 (head/neck) and a second arm chain 15-18). Which chain is left vs right
                              is not documented in the published sources: uncertain.
    joints_TCG-15.txt     17  TCG order: the 17 joint names sorted alphabetically (Chest, Head, Hips, LeftArm,
                              LeftFoot, LeftForeArm, LeftHand, LeftLeg, LeftUpLeg, Neck, RightArm, RightFoot,
                              RightForeArm, RightHand, RightLeg, RightUpLeg, Spine), which reproduces every bone
                              of graph.py's TCG-15 edge list exactly; still inferred, not taken from TCG's docs.
    actions_PKU.txt       52  "NONE" (background, id 0) + the 51 PKU-MMD phase-1 classes in official order
    actions_LARA.txt       8  LARa classes in id order (Standing, Walking, Cart, Handling up/centred/down,
                              Synchronization, None)
    actions_synthetic.txt 10  the classes of trgnet_fast.data.synthetic (matched by name at run time)
    actions_TCG-15.txt    15  TCG-15 gestures in the order of TMD's TCG-15 action list (the row order of the
                              published TCG-15 embedding matrix, presumably the dataset's class ids)

MCFS-130/22 have no built-in action texts: pass class names (a list or the dataset's mapping.txt) and
optionally a description file; classes without a description are encoded by their name (with a warning).
"""
from __future__ import annotations

import os
import re
import warnings
from importlib import resources

from trgnet_fast.skeletons import DATASET_LAYOUTS, LAYOUT_JOINTS

SYNTHETIC = "synthetic"

# dataset name -> joint-description layout / built-in action file stem (None: none shipped)
_ACTION_FILES = {"PKU-subject": "PKU", "PKU-view": "PKU", "PKU": "PKU", "LARA": "LARA", "TCG-15": "TCG-15",
                 SYNTHETIC: SYNTHETIC}
_LAYOUT_ALIASES = {"PKU": "PKU", "BODY_25": "BODY_25", "MCFS": "BODY_25", "TCG": "TCG-15"}

DESCRIPTION_DIR = "descriptions"


def joint_layout(dataset: str) -> str:
    """Skeleton layout ("PKU" | "LARA" | "BODY_25" | "TCG-15") of a dataset name (also "synthetic" → PKU and the
    layout names themselves)."""
    if dataset == SYNTHETIC:
        return "PKU"
    if dataset in DATASET_LAYOUTS:
        return DATASET_LAYOUTS[dataset]
    if dataset in LAYOUT_JOINTS:
        return dataset
    if dataset in _LAYOUT_ALIASES:
        return _LAYOUT_ALIASES[dataset]
    raise ValueError(f"dataset: expected one of {sorted(set(DATASET_LAYOUTS) | {SYNTHETIC})} "
                     f"(or a layout {sorted(LAYOUT_JOINTS)}), got {dataset!r}")


def _package_file(name: str) -> str:
    return str(resources.files("trgnet_fast.text").joinpath(DESCRIPTION_DIR, name))


def read_description_lines(path: str | os.PathLike) -> list[str]:
    """Non-blank lines of a description file, stripped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: description file not found")
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def split_description(line: str) -> tuple[str, str]:
    """("Name", "definition") of a "Name: definition" line; ("line", "") when it has no colon."""
    if ":" not in line:
        return line.strip(), ""
    name, definition = line.split(":", 1)
    return name.strip(), definition.strip()


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def joint_description_file(dataset: str) -> str:
    return _package_file(f"joints_{joint_layout(dataset)}.txt")


def joint_texts(dataset: str) -> list[str]:
    """The V joint description lines of the dataset's skeleton layout (V = LAYOUT_JOINTS[layout])."""
    layout = joint_layout(dataset)
    lines = read_description_lines(joint_description_file(dataset))
    if len(lines) != LAYOUT_JOINTS[layout]:
        raise ValueError(f"{joint_description_file(dataset)}: expected {LAYOUT_JOINTS[layout]} lines, "
                         f"got {len(lines)}")
    return lines


def joint_names(dataset: str) -> list[str]:
    return [split_description(line)[0] for line in joint_texts(dataset)]


def builtin_action_file(dataset: str) -> str | None:
    stem = _ACTION_FILES.get(dataset)
    return _package_file(f"actions_{stem}.txt") if stem else None


def _builtin_class_names(dataset: str) -> list[str] | None:
    if dataset == SYNTHETIC:
        from trgnet_fast.data.synthetic import CLASS_NAMES
        return list(CLASS_NAMES)
    path = builtin_action_file(dataset)
    return [split_description(line)[0] for line in read_description_lines(path)] if path else None


def action_texts(dataset: str, class_names=None, descriptions_file=None) -> tuple[list[str], list[str], dict]:
    """(names, texts, info) for the K action classes.

    class_names: None (the dataset's built-in classes), a list of names, or the path of a ``mapping.txt``
    ("id name" lines, read with :func:`trgnet_fast.data.read_mapping`).
    descriptions_file: optional "Name: definition" file; default the built-in file of the dataset, if any.
    Matching: each class takes the line whose name equals its name (case, spaces, "_" and "-" ignored); if no
    class matches by name but the file has exactly K lines, lines are taken in order. A class without a
    description is encoded by its bare name (one warning listing them). ``info`` records what was done.
    Raises ValueError when there are no built-in classes and no class names.
    """
    if isinstance(class_names, (str, os.PathLike)):
        from trgnet_fast.data import read_mapping
        class_names = read_mapping(class_names)
    if class_names is None:
        class_names = _builtin_class_names(dataset)
        if class_names is None:
            raise ValueError(f"dataset {dataset!r} has no built-in action classes: pass class_names "
                             "(a list or a mapping.txt)")
    names = [str(n) for n in class_names]
    if descriptions_file is None:
        descriptions_file = builtin_action_file(dataset)
    info = {"descriptions_file": descriptions_file and os.fspath(descriptions_file), "matched": "none",
            "undescribed": []}
    lines = read_description_lines(descriptions_file) if descriptions_file else []
    by_name = {}
    for line in lines:
        by_name.setdefault(_key(split_description(line)[0]), line)
    texts = [by_name.get(_key(n)) for n in names]
    if any(t is not None for t in texts):
        info["matched"] = "name"
    elif lines and len(lines) == len(names):
        texts, info["matched"] = list(lines), "order"
    missing = [n for n, t in zip(names, texts) if t is None]
    if missing:
        info["undescribed"] = missing
        warnings.warn(f"{dataset}: no description for {len(missing)} of {len(names)} classes "
                      f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); encoding their names",
                      stacklevel=2)
    texts = [t if t is not None else n for n, t in zip(names, texts)]
    return names, texts, info
