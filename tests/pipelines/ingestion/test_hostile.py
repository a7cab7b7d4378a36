"""Hostile source folders: symlink loops, links out of the source, one class, multi-page files,
kills between the store and the manifest, corrupted staged work (issue 13)."""

import logging
import os
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from breast_cancer_pipeline.pipelines.ingestion.nodes import BadFilesError

from .helpers import (
    committed_pngs,
    dicom_frames,
    image_bytes,
    ingest,
    kill_at_rename,
    params,
    png_pixels,
    run_killed,
    store_for,
    tiff_pages,
    two_classes,
    write_tree,
)

# -- 1. the walk: loops, links outside, no content in reports ---------------------------------


def test_two_symlink_loops_finish_in_seconds_with_one_warning(src, out, caplog):
    write_tree(src, two_classes(3))
    os.symlink(".", src / "a/loop")
    os.symlink(".", src / "loop_a")
    os.symlink(".", src / "loop_b")
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        result = ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    assert time.perf_counter() - started < 30
    assert sorted(result.manifest["source_path"]) == sorted(two_classes(3))
    assert result.duplicates.empty
    loops = [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]
    assert len(loops) == 1 and all(f"{n!r}" in loops[0] for n in ("a/loop", "loop_a", "loop_b"))


def _outside_setup(tmp_path: Path, src: Path) -> Path:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "passwd").write_bytes(b"root:x:0:0:SECRET:/root:/bin/bash\n")
    (outside / "real.png").write_bytes(image_bytes(99))
    write_tree(src, two_classes(3))
    os.symlink(outside / "passwd", src / "a/passwd.png")
    os.symlink(outside / "real.png", src / "b/outside.png")
    return outside


def test_links_outside_source_are_bad_files_with_the_reason_only(tmp_path, src, out):
    outside = _outside_setup(tmp_path, src)
    with pytest.raises(BadFilesError) as error:
        ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    message = str(error.value)
    assert f"a/passwd.png: symbolic link to {str(outside / 'passwd')!r}" in message
    assert "b/outside.png: symbolic link" in message and "follow_external_links" in message

    result = ingest(src, out, params(on_bad_file="skip", split={"ratios": [0.5, 0.5]}))
    assert sorted(result.manifest["source_path"]) == sorted(two_classes(3))
    assert sorted(result.rejected["path"]) == ["a/passwd.png", "b/outside.png"]
    assert not result.rejected.astype(str).apply(lambda c: c.str.contains("SECRET")).any().any()


def test_links_outside_source_are_ingested_with_the_option(tmp_path, src, out):
    _outside_setup(tmp_path, src)
    run = params(follow_external_links=True, on_bad_file="skip", split={"ratios": [0.5, 0.5]})
    result = ingest(src, out, run)
    assert "b/outside.png" in set(result.manifest["source_path"])
    # /etc/passwd-like content is read only now, and only its reason is reported.
    assert result.rejected[["path", "reason"]].values.tolist() == [["a/passwd.png", "not an image"]]
    assert not result.rejected["detail"].str.contains("SECRET|root:x").any()


# -- 2. classes ---------------------------------------------------------------------------------


def test_one_class_stops_ingestion_naming_the_class(src, out):
    write_tree(src, {f"benign/{i}.png": image_bytes(i) for i in range(5)})
    with pytest.raises(ValueError, match=r"1 class\(es\): 'benign' \(5 images\).*at least two"):
        ingest(src, out, params())
    assert not (out / "images").exists()  # stopped before any conversion


def test_bad_files_leaving_one_class_stop_at_the_split(src, out):
    write_tree(src, {**{f"a/{i}.png": image_bytes(i) for i in range(3)}, "b/x.png": b""})
    with pytest.raises(ValueError, match=r"ingested images hold 1 class\(es\): 'a' \(3 images\)"):
        ingest(src, out, params(on_bad_file="skip"))


def test_empty_label_is_not_counted_as_a_class(src, out, caplog):
    write_tree(src, two_classes(3))
    rows = [(rel, rel[0]) for rel in two_classes(3)] + [("a/0.png", ""), ("gone.png", "")]
    pd.DataFrame(rows[:6] + rows[7:], columns=["file", "dx"]).to_csv(src / "t.csv", index=False)
    csv = {"path": "t.csv", "path_column": "file", "label_column": "dx"}
    with caplog.at_level(logging.INFO):
        ingest(src, out, params(csv=csv, on_bad_file="skip", split={"ratios": [0.5, 0.5]}))
    found = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Found"))
    assert "in 2 classes (a: 3, b: 3)" in found


def test_a_class_missing_from_a_split_is_named(src, out, caplog):
    files = {**{f"a/{i}.png": image_bytes(i) for i in range(6)}, "b/0.png": image_bytes(50)}
    with caplog.at_level(logging.WARNING):
        ingest(write_tree(src, files), out, params())
    warning = next(r.getMessage() for r in caplog.records if "have no image" in r.getMessage())
    assert "'b' in val, 'b' in test" in warning and "'a' in" not in warning


# -- 3. multi-page files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "build"), [("a/stack.tif", tiff_pages), ("a/cine.dcm", dicom_frames)]
)
def test_multipage_first_all_and_error(src, out, caplog, name, build):
    files = {**two_classes(3), name: build([0, 100, 200])}
    write_tree(src, files)
    with caplog.at_level(logging.WARNING):
        first = ingest(src, out, params()).manifest
    rows = first[first["source_path"] == name]
    assert len(rows) == 1 and rows["mean"].item() < 10  # page 0
    assert any(f"{name} (3 pages)" in r.getMessage() for r in caplog.records)

    every = ingest(src, out, params(multipage="all")).manifest
    rows = every[every["source_path"] == name].sort_values("path")
    assert rows["path"].tolist() == [
        f"{name}.page0.png",
        f"{name}.page1.png",
        f"{name}.page2.png",
    ]
    assert [round(m) for m in rows["mean"]] == [3, 103, 203]
    assert rows["group"].nunique() == 1 and rows["split"].nunique() == 1
    assert (out / "images" / f"{name}.page2.png").is_file()
    assert not (out / "images" / f"{name}.png").exists()  # superseded, removed once published

    with pytest.raises(BadFilesError, match=rf"{name}: multi-page file"):
        ingest(src, out, params(multipage="error"))


# -- 4. a kill between the store and the manifest ----------------------------------------------

KILL_AT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from tests.pipelines.ingestion import helpers

    source, out, moment = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    store = helpers.store_for(out)
    real_save = store.save

    def save_then_die(data):
        real_save(data)
        if moment == "after_store" and type(data).__name__ == "StorePlan":
            os._exit(17)  # the store finished, the manifest is not written

    store.save = save_then_die
    helpers.store_for = lambda _: store
    real_split = helpers.split_manifest

    def split_write_die(*args):
        manifest = real_split(*args)
        manifest.to_parquet(out / "manifest.parquet")  # as the catalog saves it
        if moment == "after_manifest":
            os._exit(17)  # the manifest is written, the PNGs not swapped in
        return manifest

    helpers.split_manifest = split_write_die
    helpers.ingest(source, out, helpers.params())
    """
)


def _described(manifest: pd.DataFrame) -> dict[str, str]:
    return dict(zip(manifest["path"], manifest["sha256"], strict=True))


@pytest.mark.parametrize("moment", ["after_store", "after_manifest"])
def test_a_kill_around_the_manifest_write_leaves_a_consistent_manifest(src, tmp_path, moment):
    files = two_classes(5)
    write_tree(src, files)
    out = tmp_path / "out"
    out.mkdir()
    before = ingest(src, out, params()).manifest
    before.to_parquet(out / "manifest.parquet")
    (src / "a/0.png").write_bytes(image_bytes(123))  # changed
    (src / "b/4.png").unlink()  # removed: its PNG is superseded
    write_tree(src, {"b/new.png": image_bytes(77)})  # added

    run_killed(KILL_AT, str(src), str(out), moment)
    manifest = pd.read_parquet(out / "manifest.parquet")
    stored = store_for(out).load()
    assert set(manifest["path"]) <= set(stored)  # every path of the manifest on disk exists
    if moment == "after_store":
        # The previous manifest and exactly the PNGs it describes, untouched.
        pd.testing.assert_frame_equal(manifest, before)
        assert committed_pngs(out / "images") == _described(before)
    else:
        # The new manifest: its PNGs are read (from the staging area until swapped in).
        assert {p: png_pixels(stored[p]()) for p in manifest["path"]} == _described(manifest)

    after = ingest(src, out, params()).manifest
    assert committed_pngs(out / "images") == _described(after)
    assert not (out / "images/b/4.png").exists() and not (out / "images/.staging").exists()


# -- 5. staged work is verified before reuse ----------------------------------------------------


def test_a_corrupted_staged_png_of_the_same_size_is_converted_again(src, tmp_path):
    files = two_classes(4)
    write_tree(src, files)
    out = tmp_path / "out"
    kill_at_rename(src, out, 5)  # four PNGs staged
    staged = sorted((out / "images/.staging").rglob("*.png"))
    assert len(staged) == 4
    original = staged[0].read_bytes()
    corrupt = original[:-20] + bytes(b ^ 0xFF for b in original[-20:-12]) + original[-12:]
    staged[0].write_bytes(corrupt)
    assert len(corrupt) == len(original)

    rerun = ingest(src, out, params())
    assert rerun.store.last_save == {"planned": 8, "skipped": 3, "failed": 0, "produced": 5}
    clean = ingest(src, tmp_path / "clean", params())
    pd.testing.assert_frame_equal(rerun.manifest, clean.manifest)
    rel = staged[0].relative_to(out / "images/.staging").as_posix()
    assert (out / "images" / rel).read_bytes() == (tmp_path / "clean/images" / rel).read_bytes()
