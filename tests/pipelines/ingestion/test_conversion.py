"""Bad files, incremental reruns, parallel conversion and runs killed mid-conversion."""

import json
import logging
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breast_cancer_pipeline.pipelines.ingestion.nodes import BadFilesError

from .helpers import (
    committed_pngs,
    image_bytes,
    ingest,
    kill_at_rename,
    params,
    store_for,
    two_classes,
    write_tree,
)


def _png_16_bit_rgb(width: int = 8, height: int = 8) -> bytes:
    """A valid PNG with 16 bits per colour sample, a mode the decoder refuses."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\0" + bytes(width * 6) for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


BAD = {
    "benign/empty.png": (b"", "empty file"),
    "benign/truncated.png": (image_bytes(3, size=64)[:200], "file is truncated"),
    "malignant/error page.jpg": (b"<html>404 Not Found</html>", "not an image"),
    "malignant/scan.dcm": (b"\0" * 128 + b"DICM" + b"\x02\x00garbage" * 4, "unreadable DICOM"),
    "normal/huge.png": (image_bytes(5, size=200), "decompression bomb"),
    "normal/rgb16.png": (_png_16_bit_rgb(), "unsupported 16-bit colour image"),
}
GOOD = {
    f"{label}/ok {i}.png": image_bytes(10 * c + i)
    for c, label in enumerate(["benign", "malignant", "normal"])
    for i in range(3)
}
BAD_PARAMS = {"max_pixels": 100 * 100, "split": {"ratios": [0.5, 0.5]}}


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the broken DICOM
def test_every_bad_file_is_listed_with_its_reason_when_failing(src, out):
    write_tree(src, {**GOOD, **{rel: data for rel, (data, _) in BAD.items()}})
    with pytest.raises(BadFilesError) as error:
        ingest(src, out, params(**BAD_PARAMS))
    message = str(error.value)
    assert message.startswith(f"{len(BAD)} of {len(BAD) + len(GOOD)} files")
    for rel, (_, reason) in BAD.items():
        assert f"  {rel}: {reason}\n" in message
    assert "ok 1.png" not in message and "on_bad_file: skip" in message


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bad_files_are_skipped_and_reported(src, out):
    write_tree(src, {**GOOD, **{rel: data for rel, (data, _) in BAD.items()}})
    result = ingest(src, out, params(on_bad_file="skip", **BAD_PARAMS))
    assert sorted(result.manifest["source_path"]) == sorted(GOOD)
    reasons = dict(zip(result.rejected["path"], result.rejected["reason"], strict=True))
    assert reasons == {rel: reason for rel, (_, reason) in BAD.items()}
    assert result.rejected["detail"].str.contains("ingestion.").all()  # each says the fix
    assert sorted(result.store.load()) == sorted(GOOD)  # no PNG of a bad file


def test_csv_rows_without_a_file_are_bad_files(src, out):
    write_tree(src, {"a.png": image_bytes(1), "b.png": image_bytes(2), "c.png": image_bytes(3)})
    pd.DataFrame(
        {"file": ["a.png", "b.png", "c.png", "gone.png"], "dx": ["x", "y", "x", "y"]}
    ).to_csv(src / "labels.csv", index=False)
    csv = {"path": "labels.csv", "path_column": "file", "label_column": "dx"}
    with pytest.raises(BadFilesError, match=r"labels.csv line 5: listed but not found"):
        ingest(src, out, params(csv=csv))
    result = ingest(src, out, params(csv=csv, on_bad_file="skip"))
    assert result.rejected["path"].tolist() == ["gone.png"]
    assert len(result.manifest) == 3


def _mtimes(folder: Path) -> dict[str, int]:
    return {
        p.relative_to(folder).as_posix(): p.stat().st_mtime_ns
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_rerun_converts_only_new_and_changed_sources_and_prunes_removed(src, out):
    files = two_classes(4)
    write_tree(src, files)
    first = ingest(src, out, params())
    assert first.store.last_save == {"planned": 8, "skipped": 0, "failed": 0, "produced": 8}
    before = _mtimes(out / "images")

    second = ingest(src, out, params())
    assert second.store.last_save["skipped"] == 8 and second.store.last_save["produced"] == 0
    assert _mtimes(out / "images") == before  # nothing rewritten
    pd.testing.assert_frame_equal(first.manifest, second.manifest)

    (src / "a/0.png").write_bytes(image_bytes(99))  # changed
    (src / "b/3.png").unlink()  # removed
    write_tree(src, {"b/new.png": image_bytes(77)})  # added
    third = ingest(src, out, params())
    assert third.store.last_save == {"planned": 8, "skipped": 6, "failed": 0, "produced": 2}
    assert not (out / "images/b/3.png").exists()
    png = np.asarray(Image.open(out / "images/a/0.png"))
    np.testing.assert_array_equal(png, np.asarray(Image.open(src / "a/0.png")))
    assert "b/new.png" in set(third.manifest["path"])

    # Another colour mode is another conversion: nothing is reused.
    fourth = ingest(src, out, params(color_mode="rgb"))
    assert fourth.store.last_save["skipped"] == 0 and (fourth.manifest["channels"] == 3).all()


def test_parallel_conversion_equals_sequential(src, tmp_path):
    files = {
        f"{label}/{i}.tif": image_bytes(10 * c + i, size=48, fmt="TIFF", mode="I;16")
        for c, label in enumerate("ab")
        for i in range(6)
    }
    write_tree(src, files)
    one = ingest(src, tmp_path / "one", params(workers=1))
    two = ingest(src, tmp_path / "two", params(workers=2))
    pd.testing.assert_frame_equal(one.manifest, two.manifest)
    for rel in one.manifest["path"]:
        assert (tmp_path / "one/images" / rel).read_bytes() == (
            tmp_path / "two/images" / rel
        ).read_bytes()


def test_first_run_killed_mid_conversion_leaves_nothing_and_rerun_completes(src, tmp_path):
    files = two_classes(5)
    write_tree(src, files)
    out = tmp_path / "out"
    kill_at_rename(src, out, 4)  # three PNGs finished, the fourth written but not renamed
    images = out / "images"
    assert committed_pngs(images) == {}  # nothing under a real name: nothing to trust
    assert len(list((images / ".staging").rglob("*.png"))) == 3
    assert len(list(images.rglob(".*.part"))) == 1
    journal = (out / "conversion_index.jsonl").read_text().splitlines()
    assert [json.loads(line)["staged"] for line in journal] == [True] * 3
    assert list(store_for(out).load()) == []
    assert not list(out.rglob("*manifest*"))

    rerun = ingest(src, out, params())
    assert rerun.store.last_save == {"planned": 10, "skipped": 3, "failed": 0, "produced": 7}
    assert not (images / ".staging").exists() and not list(images.rglob(".*.part"))
    clean = ingest(src, tmp_path / "clean", params())
    pd.testing.assert_frame_equal(rerun.manifest, clean.manifest)
    assert committed_pngs(images) == dict(
        zip(clean.manifest["path"], clean.manifest["sha256"], strict=True)
    )


def test_rerun_killed_mid_conversion_keeps_the_previous_outputs_true(src, tmp_path):
    files = two_classes(5)
    write_tree(src, files)
    out = tmp_path / "out"
    before = ingest(src, out, params()).manifest
    write_tree(src, {rel: image_bytes(100 + n) for n, rel in enumerate(files)})  # all changed
    kill_at_rename(src, out, 4)
    # The previous manifest still describes exactly the PNGs on disk.
    assert committed_pngs(out / "images") == dict(
        zip(before["path"], before["sha256"], strict=True)
    )

    after = ingest(src, out, params())
    assert after.store.last_save == {"planned": 10, "skipped": 3, "failed": 0, "produced": 7}
    manifest = after.manifest
    assert committed_pngs(out / "images") == dict(
        zip(manifest["path"], manifest["sha256"], strict=True)
    )
    assert set(manifest["sha256"]).isdisjoint(before["sha256"])


def test_journal_line_cut_by_a_crash_is_ignored(src, out):
    write_tree(src, {"a/x.png": image_bytes(1), "b/y.png": image_bytes(2)})
    ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    journal = out / "conversion_index.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text(lines[0] + "\n" + lines[1][:30])  # the second entry half-written
    rerun = ingest(src, out, params(split={"ratios": [0.5, 0.5]}))
    assert rerun.store.last_save["skipped"] == 1 and rerun.store.last_save["produced"] == 1
    assert os.path.getsize(journal) > 0


def test_conversion_of_a_few_hundred_images_logs_count_rate_and_eta(src, out, caplog):
    files = {
        f"{label}/{i:03d}.png": image_bytes(1000 * c + i, size=8)
        for c, label in enumerate("ab")
        for i in range(150)
    }
    write_tree(src, files)
    with caplog.at_level(logging.INFO):
        ingest(src, out, params(workers=2, progress_seconds=0.0))
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert len(lines) >= 2
    counts = [
        int(re.search(r": (\d+)/300 files \(\d+ %\), [\d.]+ files/s, ETA ", line)[1])
        for line in lines
    ]
    assert counts == sorted(counts) and counts[-1] < 300
    assert any("300/300 files done in" in r.getMessage() for r in caplog.records)


def test_a_source_folder_url_converts_as_the_local_folder_and_reruns_incrementally(src, tmp_path):
    import fsspec

    files = two_classes(4)
    write_tree(src, files)
    memory, root = fsspec.filesystem("memory"), f"/{tmp_path.name}"
    for rel, data in files.items():
        memory.pipe(f"{root}/{rel}", data)
    try:
        here = ingest(src, tmp_path / "here", params())
        there = ingest(f"memory://{root}", tmp_path / "there", params())
        pd.testing.assert_frame_equal(there.manifest, here.manifest)
        assert committed_pngs(tmp_path / "there/images") == committed_pngs(tmp_path / "here/images")
        assert len(there.manifest) == 8
        again = ingest(f"memory://{root}", tmp_path / "there", params())
        assert again.store.last_save == {"planned": 8, "skipped": 8, "failed": 0, "produced": 0}
    finally:
        memory.rm(root, recursive=True)
