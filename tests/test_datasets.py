"""Labelled sets: folder-per-class, manifests, the dataset-label → model-label mapping, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bench.datasets import label_mapping, load_images, load_labelled_set
from bench.errors import InputError

LABELS = {0: "Deepfake", 1: "Real"}  # the production order: index 0 is the fake class


def png(path: Path, shade: int = 128, size: int = 12) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (shade, 255 - shade, shade // 2)).save(path)
    return path


def test_folder_per_class_is_case_insensitive_and_maps_synonyms(tmp_path: Path) -> None:
    png(tmp_path / "REAL" / "a.png")
    png(tmp_path / "REAL" / "nested" / "b.png")
    png(tmp_path / "Fake" / "c.png")
    lset = load_labelled_set(tmp_path)
    assert lset.kind == "folders" and lset.labelled
    assert lset.counts() == {"Fake": 1, "REAL": 2}
    indexed = {p.name: i for p, i in lset.indexed(LABELS, positive=0)}
    assert indexed == {"c.png": 0, "a.png": 1, "b.png": 1}  # fake → Deepfake (0), real → Real (1)
    assert lset.relpath(tmp_path / "REAL" / "nested" / "b.png") == "REAL/nested/b.png"
    assert lset.warnings == [] and lset.skipped == []


def test_class_folders_named_like_id2label(tmp_path: Path) -> None:
    png(tmp_path / "Deepfake" / "a.png")
    png(tmp_path / "realism" / "b.png")
    labels = {0: "Deepfake", 1: "Realism"}
    assert label_mapping(load_labelled_set(tmp_path).counts(), labels, positive=0) == {"deepfake": 0, "realism": 1}


def test_label_the_model_does_not_know_is_an_error_naming_it(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    png(tmp_path / "cats" / "b.png")
    png(tmp_path / "cats" / "c.png")
    lset = load_labelled_set(tmp_path)
    with pytest.raises(InputError, match=r"'cats' \(2 images\) matches no model label \(0=Deepfake, 1=Real\)"):
        lset.indexed(LABELS, positive=0)


def test_real_synonym_needs_a_two_class_model_and_fake_needs_a_positive() -> None:
    three = {0: "Deepfake", 1: "Real", 2: "Cartoon"}
    assert label_mapping(["real", "fake"], three, positive=0) == {"real": 1, "fake": 0}  # "real" is a name there
    with pytest.raises(InputError, match="'genuine'"):
        label_mapping(["genuine"], three, positive=0)  # two "other" classes: which one is genuine?
    with pytest.raises(InputError, match="--positive-label"):
        label_mapping(["fake"], {0: "0", 1: "1"}, positive=None)
    assert label_mapping(["fake", "real"], {0: "0", 1: "1"}, positive=1) == {"fake": 1, "real": 0}


def test_empty_class_folder_is_a_warning_not_an_error(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    (tmp_path / "fake").mkdir()
    lset = load_labelled_set(tmp_path)
    assert len(lset.items) == 1
    assert len(lset.warnings) == 1 and "fake" in lset.warnings[0] and "holds no images" in lset.warnings[0]


def test_every_class_folder_empty_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "fake").mkdir()
    with pytest.raises(InputError, match="every class folder"):
        load_labelled_set(tmp_path)


def test_images_outside_class_folders_are_skipped_and_listed(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    png(tmp_path / "loose.png")
    (tmp_path / "README.md").write_text("not an image")
    lset = load_labelled_set(tmp_path)
    assert lset.skipped == [{"path": "loose.png", "reason": "not in a class folder"}]


def test_csv_manifest_with_a_missing_file_skips_and_lists_it(tmp_path: Path) -> None:
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    manifest = tmp_path / "set.csv"
    manifest.write_text("path,label\nimgs/a.png,fake\nimgs/b.png,Real\nimgs/gone.png,real\n")
    lset = load_labelled_set(manifest)
    assert lset.kind == "manifest" and lset.root == tmp_path
    assert [(i.path.name, i.label) for i in lset.items] == [("a.png", "fake"), ("b.png", "Real")]
    assert lset.skipped == [{"path": "imgs/gone.png", "reason": "file not found"}]
    assert [i for _, i in lset.indexed(LABELS, positive=0)] == [0, 1]


def test_manifest_missing_file_is_an_error_under_strict(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    manifest = tmp_path / "set.csv"
    manifest.write_text("label,path\nfake,a.png\nreal,gone.png\n")  # columns in any order
    with pytest.raises(InputError, match=r"set.csv:line 3: listed file gone.png not found"):
        load_labelled_set(manifest, strict=True)


def test_jsonl_manifest_and_folder_holding_a_manifest(tmp_path: Path) -> None:
    png(tmp_path / "x" / "a.png")
    png(tmp_path / "x" / "b.png")
    rows = [{"path": "x/a.png", "label": "deepfake"}, {"path": str(tmp_path / "x" / "b.png"), "label": "real"}]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    for source in (tmp_path / "manifest.jsonl", tmp_path):
        lset = load_labelled_set(source)
        assert lset.kind == "manifest"
        assert [i for _, i in lset.indexed(LABELS, positive=0)] == [0, 1]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("noheader.csv", "a.png,fake\n", "header row with 'path' and 'label'"),
        ("broken.jsonl", '{"path": "a.png", "label": "fake"}\n{oops\n', "line 2 is not JSON"),
        ("nolabel.csv", "path,label\na.png,\n", "line 2: empty label"),
        ("set.txt", "x", r"not a \.csv or \.jsonl manifest"),
    ],
)
def test_bad_manifests(tmp_path: Path, name: str, text: str, message: str) -> None:
    png(tmp_path / "a.png")
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(InputError, match=message):
        load_labelled_set(manifest)


def test_missing_dataset_and_folder_without_classes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_labelled_set(tmp_path / "nope")
    png(tmp_path / "flat" / "a.png")
    with pytest.raises(InputError, match="--images"):
        load_labelled_set(tmp_path / "flat")


def test_images_folder_is_recursive_and_ignores_labels(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    png(tmp_path / "deep" / "er" / "b.jpg")
    png(tmp_path / ".hidden" / "c.png")
    lset = load_images(tmp_path)
    assert not lset.labelled
    assert [lset.relpath(i.path) for i in lset.items] == ["deep/er/b.jpg", "real/a.png"]
    assert lset.indexed(LABELS, positive=0) == [(i.path, None) for i in lset.items]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        load_images(tmp_path / "empty")


def test_fingerprint_changes_with_labels(tmp_path: Path) -> None:
    png(tmp_path / "real" / "a.png")
    png(tmp_path / "fake" / "b.png")
    first = load_labelled_set(tmp_path).fingerprint()
    assert first["n"] == 2 and first["fingerprint"] == load_labelled_set(tmp_path).fingerprint()["fingerprint"]
    (tmp_path / "fake" / "b.png").rename(tmp_path / "real" / "b.png")
    (tmp_path / "fake" / "c.png").write_bytes((tmp_path / "real" / "a.png").read_bytes())
    assert load_labelled_set(tmp_path).fingerprint()["fingerprint"] != first["fingerprint"]


def test_manifest_group_column_csv_and_jsonl(tmp_path: Path) -> None:
    """An optional group column (source video, identity) is read per row; sets without one are unchanged."""
    for name in ("a", "b", "c"):
        png(tmp_path / f"{name}.png")
    (tmp_path / "m.csv").write_text("path,label,group\na.png,fake,vid1\nb.png,fake,vid1\nc.png,real,vid2\n")
    lset = load_labelled_set(tmp_path / "m.csv")
    assert lset.groups == ["vid1", "vid1", "vid2"]
    (tmp_path / "m.jsonl").write_text(
        "\n".join(json.dumps({"path": f"{n}.png", "label": "fake", "group": g}) for n, g in (("a", 7), ("b", 8)))
    )
    assert load_labelled_set(tmp_path / "m.jsonl").groups == ["7", "8"]
    (tmp_path / "plain.csv").write_text("path,label\na.png,fake\n")
    assert load_labelled_set(tmp_path / "plain.csv").groups is None


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.csv", "path,label,group\na.png,fake,v1\nb.png,real,\n"),
        ("m.jsonl", '{"path": "a.png", "label": "fake", "group": "v1"}\n{"path": "b.png", "label": "real"}\n'),
    ],
)
def test_a_manifest_with_groups_needs_one_on_every_row(tmp_path: Path, name: str, text: str) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=r"line [23]: empty group"):
        load_labelled_set(tmp_path / name)


def test_fingerprint_counts_groups_only_when_present(tmp_path: Path) -> None:
    """Old fingerprints stay valid (a set without groups hashes as before); regrouping a set changes it."""
    import hashlib

    png(tmp_path / "a.png")
    png(tmp_path / "b.png", shade=10)
    (tmp_path / "plain.csv").write_text("path,label\na.png,fake\nb.png,real\n")
    rows = sorted((p, (tmp_path / p).stat().st_size, label) for p, label in (("a.png", "fake"), ("b.png", "real")))
    before = hashlib.sha256("\n".join(f"{r}\t{s}\t{label}" for r, s, label in rows).encode()).hexdigest()
    assert load_labelled_set(tmp_path / "plain.csv").fingerprint()["fingerprint"] == before  # the pre-group formula
    (tmp_path / "g.csv").write_text("path,label,group\na.png,fake,v1\nb.png,real,v2\n")
    (tmp_path / "h.csv").write_text("path,label,group\na.png,fake,v1\nb.png,real,v1\n")
    grouped = {load_labelled_set(tmp_path / f).fingerprint()["fingerprint"] for f in ("g.csv", "h.csv")}
    assert len(grouped) == 2 and before not in grouped


# --- sha256 in manifests (issue 27) ---------------------------------------------------------------------------


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_manifest_sha256_is_verified_csv_and_jsonl(tmp_path: Path) -> None:
    a, b = png(tmp_path / "img" / "a.png", 10), png(tmp_path / "img" / "b.png", 200)
    csv = tmp_path / "m.csv"
    csv.write_text(f"path,label,group,sha256\nimg/a.png,real,g1,{_sha(a)}\nimg/b.png,fake,g2,{_sha(b).upper()}\n")
    lset = load_labelled_set(csv)
    assert [i.path.name for i in lset.items] == ["a.png", "b.png"] and lset.groups == ["g1", "g2"]
    jsonl = tmp_path / "m.jsonl"
    rows = [{"path": "img/a.png", "label": "real", "sha256": _sha(a)}, {"path": "img/b.png", "label": "fake"}]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert len(load_labelled_set(jsonl).items) == 2  # a row without sha256 is not checked
    png(b, 90)  # the file changes after the manifest was written
    for manifest in (csv,):
        with pytest.raises(InputError) as err:
            load_labelled_set(manifest)
        text = str(err.value)
        assert "img/b.png" in text and "line 3" in text and "sha256" in text and _sha(b) in text
    rows[0]["sha256"] = "0" * 64
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match=r"m\.jsonl:line 1: img/a\.png has sha256"):
        load_labelled_set(jsonl)


def test_sha256_mismatch_is_exit_2_naming_the_file_from_the_cli(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bench.cli import main

    a = png(tmp_path / "a.png", 10)
    png(tmp_path / "b.png", 200)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,sha256\na.png,real,{_sha(a)}\nb.png,fake,{'ab' * 32}\n")
    result = CliRunner().invoke(main, ["audit", "--dataset", str(manifest)])
    assert result.exit_code == 2
    assert "b.png has sha256" in result.output and "the manifest lists" in result.output
