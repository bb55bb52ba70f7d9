"""Labelled image sets: folder-per-class and CSV/JSONL manifests; plain image folders.

Formats (``load_labelled_set``):

- folder-per-class: every immediate sub-folder of the root is a class, named by the folder
  (``real/``, ``fake/``, or the model's own ``id2label`` names such as ``Deepfake/``); images inside a
  class folder are found recursively. An empty class folder is a **warning** (``LabelledSet.warnings``),
  not an error; images lying directly in the root are skipped and listed ("not in a class folder").
- manifest: a ``.csv`` file with a header holding ``path`` and ``label`` columns, or a ``.jsonl`` file of
  ``{"path": ..., "label": ...}`` objects; relative paths are relative to the manifest's folder. An optional
  ``group`` column / key names what an image shares with others (its source video, the identity shown): the
  accuracy intervals then resample groups, not images (bench.metrics); once the column is there every row
  needs a group (per-group slices in the report: accuracy per generator or source). An optional ``sha256``
  column / key (hex digest of the file's bytes) is verified when the set is read: a file whose bytes differ is an
  InputError naming it (exit 2) — the set is not the one the manifest describes. A folder
  holding ``manifest.csv``/``manifest.jsonl`` is read through that manifest (its sub-folders are storage).
  A listed file that does not exist is **skipped and listed** with the reason "file not found"
  (``LabelledSet.skipped``), the run goes on; ``strict=True`` makes it an InputError instead.
- ``load_images``: any folder, searched recursively, labels ignored (``--images``).

Dataset labels become model label indices only through :func:`label_mapping`, which is explicit and
checked: a label it cannot place is an InputError naming it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.bundle import POSITIVE_LABEL_NAMES, find_default, label_summary
from bench.errors import InputError
from bench.preprocess import IMAGE_SUFFIXES
from bench.results import DatasetInfo

# Dataset label spellings that mean "the fake class" / "the one other class of a two-class model".
FAKE_SYNONYMS = frozenset(POSITIVE_LABEL_NAMES) | {"fakes", "deepfakes", "spoofed", "synthetic"}
REAL_SYNONYMS = frozenset(
    {
        "real",
        "reals",
        "genuine",
        "authentic",
        "bonafide",
        "bona_fide",
        "bona-fide",
        "live",
        "original",
        "pristine",
        "human",
        "natural",
    }
)
MANIFEST_NAMES = ("manifest.csv", "manifest.jsonl")


def resolve_dataset(flag: str | Path | None) -> Path:
    """The dataset a command uses when the user gives none (CLI.md, defaults)."""
    return find_default("datasets", flag, "BENCH_DATASET")


def image_files(root: str | Path) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a folder")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def fingerprint(root: Path, items: list[tuple[Path, str | None]], groups: list[str] | None = None) -> DatasetInfo:
    """The results contract's dataset object: path, n, sha256 of sorted (relpath, size, label), and of the group as a
    fourth field when the set has groups (a set without groups keeps the fingerprint it always had)."""
    import hashlib

    rows = sorted(
        (p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p), p.stat().st_size, label or "")
        + (() if groups is None else (groups[i],))
        for i, (p, label) in enumerate(items)
    )
    digest = hashlib.sha256("\n".join("\t".join(map(str, row)) for row in rows).encode()).hexdigest()
    return {"path": str(root), "n": len(rows), "fingerprint": digest}


@dataclass(frozen=True)
class LabelledItem:
    """One image, its label as the dataset writes it (None in an unlabelled folder) and its group (None: none given)."""

    path: Path
    label: str | None
    group: str | None = None


@dataclass
class LabelledSet:
    """Images with dataset labels, plus what was skipped while reading and what deserves a warning."""

    root: Path
    kind: str  # "folders" | "manifest" | "images"
    items: list[LabelledItem]
    skipped: list[dict[str, str]] = field(default_factory=list)  # [{"path", "reason"}]
    warnings: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.kind != "images"

    def counts(self) -> dict[str, int]:
        """Images per dataset label, in first-seen order."""
        return dict(Counter(i.label or "" for i in self.items))

    def relpath(self, path: Path) -> str:
        """``path`` as stored in results: relative to the set's root when inside it (posix)."""
        return path.relative_to(self.root).as_posix() if path.is_relative_to(self.root) else str(path)

    @property
    def groups(self) -> list[str] | None:
        """Each image's group, in order; None when the set names none."""
        return [i.group or "" for i in self.items] if any(i.group is not None for i in self.items) else None

    def fingerprint(self) -> DatasetInfo:
        return fingerprint(self.root, [(i.path, i.label) for i in self.items], self.groups)

    def indexed(self, labels: Mapping[int, str], positive: int | None) -> list[tuple[Path, int | None]]:
        """``(path, model label index)`` per image; None indices for an unlabelled set."""
        if not self.labelled:
            return [(i.path, None) for i in self.items]
        mapping = label_mapping(self.counts(), labels, positive)
        return [(i.path, mapping[_key(i.label or "")]) for i in self.items]


def _key(label: str) -> str:
    return label.strip().lower()


def label_mapping(
    dataset_labels: Iterable[str] | Mapping[str, int], labels: Mapping[int, str], positive: int | None
) -> dict[str, int]:
    """Dataset label (lower-cased) → model label index; explicit and checked.

    A dataset label equal (case-insensitively) to an ``id2label`` name maps to that index. Otherwise a
    fake synonym (``fake``, ``deepfake``, ``spoof``, …) maps to the positive class, and a real synonym
    (``real``, ``genuine``, ``authentic``, …) to the single other class of a two-class model.
    Anything else is an InputError naming the label and what it could have been.
    """
    by_name = {_key(name): idx for idx, name in labels.items()}
    others = [idx for idx in labels if idx != positive]
    counts = dataset_labels if isinstance(dataset_labels, Mapping) else dict.fromkeys(dataset_labels, 0)
    mapping: dict[str, int] = {}
    unmapped: list[str] = []
    for label in counts:
        key = _key(label)
        if key in by_name:
            mapping[key] = by_name[key]
        elif key in FAKE_SYNONYMS and positive is not None:
            mapping[key] = positive
        elif key in REAL_SYNONYMS and positive is not None and len(others) == 1:
            mapping[key] = others[0]
        else:
            n = counts[label]
            unmapped.append(f"{label!r}" + (f" ({n} images)" if n else ""))
    if unmapped:
        known = label_summary(labels) or "none"  # a few labels, not 1,000 (#29)
        hint = "real/fake" if positive is not None and len(others) == 1 else "fake"
        raise InputError(
            f"dataset label {', '.join(unmapped)} matches no model label ({known}) nor a {hint} synonym; "
            "rename the class folder / manifest label to a model label name"
            + (" or pass --positive-label" if positive is None else "")
        )
    return mapping


def load_labelled_set(path: str | Path, strict: bool = False) -> LabelledSet:
    """Read a folder-per-class set, a manifest file, or a folder holding a manifest (module docstring)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"dataset {path} does not exist; pass --dataset DIR|MANIFEST.csv|MANIFEST.jsonl")
    if path.is_file():
        return load_manifest(path, strict=strict)
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    manifests = [path / name for name in MANIFEST_NAMES if (path / name).is_file()]
    if manifests:  # a manifest says exactly which files and labels; its folders are just storage
        return load_manifest(manifests[0], strict=strict)
    if not classes:
        raise InputError(
            f"dataset {path} has no class folders (e.g. real/, fake/) and no manifest.csv/manifest.jsonl; "
            "use --images DIR for an unlabelled folder"
        )
    items: list[LabelledItem] = []
    warnings: list[str] = []
    for folder in classes:
        files = image_files(folder)
        if not files:
            warnings.append(f"class folder {folder} holds no images; the class {folder.name!r} is not evaluated")
        items.extend(LabelledItem(p, folder.name) for p in files)
    skipped = [
        {"path": p.name, "reason": "not in a class folder"}
        for p in sorted(path.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise InputError(
            f"dataset {path}: every class folder ({', '.join(c.name for c in classes)}) is empty; "
            "add images or pass another --dataset"
        )
    return LabelledSet(root=path, kind="folders", items=items, skipped=skipped, warnings=warnings)


def load_manifest(path: Path, strict: bool = False) -> LabelledSet:
    """Read a ``path,label[,group][,sha256]`` CSV (with header) or a JSONL manifest; missing files are skipped and
    listed, a listed sha256 is verified (module docstring)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _jsonl_rows(path)
    else:
        raise InputError(f"dataset {path} is a file but not a .csv or .jsonl manifest; pass a folder or a manifest")
    root = path.parent
    items: list[LabelledItem] = []
    skipped: list[dict[str, str]] = []
    grouped = any(group is not None for _, _, _, group, _ in rows)
    for where, file, label, group, digest in rows:
        if not file or not label:
            raise InputError(f"{path}:{where}: empty {'path' if not file else 'label'}; every row needs path and label")
        if grouped and not group:
            raise InputError(f"{path}:{where}: empty group; once the manifest has groups every row needs one")
        target = Path(file) if Path(file).is_absolute() else root / file
        if not target.is_file():
            if strict:
                raise InputError(f"{path}:{where}: listed file {file} not found; fix the manifest or drop --strict")
            skipped.append({"path": file, "reason": "file not found"})
            continue
        if digest:
            _verify(path, where, file, target, digest)
        items.append(LabelledItem(target, label, group))
    if not items:
        raise InputError(f"manifest {path} lists no existing image ({len(skipped)} missing); fix the paths")
    return LabelledSet(root=root, kind="manifest", items=items, skipped=skipped)


def _verify(manifest: Path, where: str, file: str, target: Path, expected: str) -> None:
    """InputError naming the file when its bytes' sha256 is not the one the manifest lists."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with target.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{manifest}:{where}: cannot read {file} to verify its sha256: {exc}") from exc
    actual = digest.hexdigest()
    if actual != expected.strip().lower():
        raise InputError(
            f"{manifest}:{where}: {file} has sha256 {actual}, the manifest lists {expected.strip()}; the file is not "
            "the one the manifest describes: restore it, or update its sha256 in the manifest"
        )


Row = tuple[str, str, str, str | None, str | None]  # where, path, label, group, sha256


def _csv_rows(path: Path) -> list[Row]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "path" not in header or "label" not in header:
                raise InputError(f"manifest {path} needs a header row with 'path' and 'label' columns, got {header}")
            ip, il = header.index("path"), header.index("label")
            ig = header.index("group") if "group" in header else None
            ih = header.index("sha256") if "sha256" in header else None

            def cell(row: list[str], i: int) -> str:
                return row[i].strip() if i < len(row) else ""

            return [
                (
                    f"line {n}",
                    cell(row, ip),
                    cell(row, il),
                    None if ig is None else cell(row, ig),
                    None if ih is None else cell(row, ih) or None,
                )
                for n, row in enumerate(reader, start=2)
                if any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc


def _jsonl_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from exc
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f'{path}:line {n} is not JSON ({exc.msg}); one {{"path", "label"}} object per line'
            ) from exc
        if not isinstance(obj, dict):
            raise InputError(f'{path}:line {n} is not a JSON object; one {{"path", "label"}} object per line')
        group = None if "group" not in obj else str("" if obj["group"] is None else obj["group"]).strip()
        digest = str(obj.get("sha256") or "").strip() or None
        rows.append(
            (f"line {n}", str(obj.get("path") or "").strip(), str(obj.get("label") or "").strip(), group, digest)
        )
    return rows


def load_images(path: str | Path) -> LabelledSet:
    """Any folder of images (recursive), labels ignored: ``--images DIR``."""
    root = Path(path).expanduser()
    files = image_files(root)
    if not files:
        raise InputError(f"--images {root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return LabelledSet(root=root, kind="images", items=[LabelledItem(p, None) for p in files])
