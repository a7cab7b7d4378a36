"""The source folder as an fsspec URL: listed and read with fsspec, or a file:// path."""

import pickle
import time

import fsspec
import pytest
from kedro.io import DatasetError

from breast_cancer_pipeline.datasets import ImageFolderDataset

FILES = {"a/1.png": b"first", "a/2.png": b"second!", "b/deep/3.dcm": b"third file"}


@pytest.fixture
def memory_url(tmp_path):
    """A folder of the in-memory file system (this process only), removed afterwards."""
    root = f"/{tmp_path.name}"
    memory = fsspec.filesystem("memory")
    yield f"memory://{root}", memory, root
    if memory.exists(root):
        memory.rm(root, recursive=True)


def test_a_folder_url_is_listed_with_sizes_and_times_and_read_with_fsspec(memory_url):
    url, memory, root = memory_url
    for rel, data in FILES.items():
        memory.pipe(f"{root}/{rel}", data)

    listing = ImageFolderDataset(url).load()

    assert list(listing) == sorted(FILES)
    assert {rel: f.size for rel, f in listing.items()} == {k: len(v) for k, v in FILES.items()}
    assert listing["a/1.png"].path == f"memory://{root}/a/1.png"
    assert abs(listing["a/1.png"].mtime_ns / 1e9 - time.time()) < 600  # a real time stamp
    assert {rel: load() for rel, load in listing.items()} == FILES
    assert pickle.loads(pickle.dumps(listing["b/deep/3.dcm"]))() == b"third file"
    assert ImageFolderDataset(url).exists()

    memory.pipe(f"{root}/a/1.png", b"changed")  # a rewritten file: another size and time
    again = ImageFolderDataset(url).load()["a/1.png"]
    assert again.size == 7 and again.mtime_ns >= listing["a/1.png"].mtime_ns


def test_a_missing_folder_url_names_the_setting(memory_url):
    url, _, _ = memory_url
    dataset = ImageFolderDataset(f"{url}/nothing", setting="ingestion.external_dir")
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="set ingestion.external_dir to a folder"):
        dataset.load()


def test_a_file_url_is_the_local_folder(tmp_path):
    for rel, data in FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)

    listing = ImageFolderDataset(f"file://{tmp_path}").load()

    assert listing == ImageFolderDataset(str(tmp_path)).load()
    assert listing["a/2.png"].path == str(tmp_path / "a/2.png")
