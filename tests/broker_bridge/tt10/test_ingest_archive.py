"""The archive keeps every file verbatim under its SHA-256, durably, once."""

import hashlib
import stat

import pytest

from broker_bridge.tt10.ingest.archive import Archive, ArchiveError


def test_put_stores_the_exact_bytes_under_their_sha256(tmp_path):
    archive = Archive(tmp_path / "a")
    data = b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\nNO2\t18"  # a cut file is archived as it came
    sha = archive.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    path = tmp_path / "a" / sha[:2] / sha
    assert path.read_bytes() == data and archive.get(sha) == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert archive.put(data) == sha  # the same bytes again: one file
    assert [p.name for p in path.parent.iterdir()] == [sha]


def test_empty_file_is_archived_too(tmp_path):
    archive = Archive(tmp_path)
    sha = archive.put(b"")
    assert archive.get(sha) == b""


def test_altered_or_missing_file_is_an_error_not_wrong_bytes(tmp_path):
    archive = Archive(tmp_path)
    sha = archive.put(b"abc")
    archive.path_of(sha).write_bytes(b"abd")
    with pytest.raises(ArchiveError, match="no longer match"):
        archive.get(sha)
    assert archive.remove(sha) and not archive.remove(sha)
    with pytest.raises(ArchiveError, match="missing"):
        archive.get(sha)


def test_put_all_stores_each_file_once_and_leaves_no_temporary_file(tmp_path):
    archive = Archive(tmp_path / "a")
    kept = archive.put(b"already here")
    datas = [f"file {i}\r\n".encode() for i in range(40)] + [b"file 3\r\n", b"already here"]
    shas = archive.put_all(datas)
    assert shas == [hashlib.sha256(d).hexdigest() for d in datas] and shas[-1] == kept
    assert all(archive.get(sha) == data for sha, data in zip(shas, datas, strict=True))
    stored = [p for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(stored) == 41 and not [p for p in stored if p.name.startswith(".")]
    assert {stat.S_IMODE(p.stat().st_mode) for p in stored} == {0o600}
