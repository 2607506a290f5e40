"""The Data stage keeps an object's version when the same bytes are uploaded again, so an unchanged second
run against the same emulator sees the same data (and the training cache can reuse the first run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlpipe.local.stages.upload import sha256_base64, upload_data


def test_identical_files_keep_their_version_and_changed_ones_get_a_new_one(
    emulated: Any, tmp_path: Path
) -> None:
    bucket = emulated.data_bucket(versioned=True)
    s3 = emulated.client("s3")
    (tmp_path / "train").mkdir()
    (tmp_path / "validation").mkdir()
    (tmp_path / "train" / "a.csv").write_text("y,x\n1,2\n")
    (tmp_path / "validation" / "v.csv").write_text("y,x\n3,4\n")

    first = {u.key: u for u in upload_data(s3, tmp_path, bucket, "datasets/")}
    assert not any(u.kept for u in first.values())
    head = s3.head_object(Bucket=bucket, Key="datasets/train/a.csv", ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == sha256_base64(b"y,x\n1,2\n"), "uploaded with a SHA-256 checksum"

    (tmp_path / "train" / "a.csv").write_text("y,x\n1,3\n")  # one byte changed
    second = {u.key: u for u in upload_data(s3, tmp_path, bucket, "datasets/")}
    assert second["datasets/validation/v.csv"].kept
    assert second["datasets/validation/v.csv"].version_id == first["datasets/validation/v.csv"].version_id
    assert not second["datasets/train/a.csv"].kept
    assert second["datasets/train/a.csv"].version_id != first["datasets/train/a.csv"].version_id
    versions = s3.list_object_versions(Bucket=bucket, Prefix="datasets/")["Versions"]
    assert len(versions) == 3  # two of a.csv, one of v.csv: nothing uploaded needlessly


def test_an_object_uploaded_without_a_sha256_is_uploaded_again_once(emulated: Any, tmp_path: Path) -> None:
    """An object put by another tool (botocore's default CRC32 here) cannot be compared: it is replaced
    once, with a SHA-256, and kept from then on."""
    bucket = emulated.data_bucket(versioned=True)
    s3 = emulated.client("s3")
    s3.put_object(Bucket=bucket, Key="datasets/train/a.csv", Body=b"y,x\n1,2\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.csv").write_text("y,x\n1,2\n")
    (first,) = upload_data(s3, tmp_path, bucket, "datasets/")
    (second,) = upload_data(s3, tmp_path, bucket, "datasets/")
    assert not first.kept and second.kept and second.version_id == first.version_id


def test_a_test_folder_is_uploaded_when_present(emulated: Any, tmp_path: Path) -> None:
    bucket = emulated.data_bucket(versioned=True)
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    (tmp_path / "train" / "a.csv").write_text("y,x\n1,2\n")
    (tmp_path / "test" / "t.csv").write_text("y,x\n5,6\n")
    keys = {u.key for u in upload_data(emulated.client("s3"), tmp_path, bucket, "datasets/")}
    assert keys == {"datasets/train/a.csv", "datasets/test/t.csv"}
