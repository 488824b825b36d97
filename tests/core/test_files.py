"""webui.core.io.files: the one atomic write and A1111's output-folder rule."""

import os

import pytest

from webui.core.io.files import atomic_write, output_dir, under_data_dir


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_atomic_write_creates_folder_and_replaces_content(tmp_path):
    path = tmp_path / "a" / "b" / "f.bin"
    assert atomic_write(path, b"one") == str(path)
    assert path.read_bytes() == b"one"
    atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert sorted(os.listdir(path.parent)) == ["f.bin"]


def test_atomic_write_str_and_text_function(tmp_path):
    path = tmp_path / "t.txt"
    atomic_write(path, "héllo")
    assert path.read_bytes() == "héllo".encode()
    atomic_write(path, lambda f: f.write("a\r\nb"), encoding="utf-8-sig", newline="")
    assert path.read_bytes() == b"\xef\xbb\xbfa\r\nb"
    atomic_write(path, lambda f: f.write(b"raw"))  # no encoding: a binary file
    assert path.read_bytes() == b"raw"
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["keep.json"]


def test_atomic_write_keep_backup(tmp_path):
    path = tmp_path / "styles.csv"
    atomic_write(path, "first", keep_backup=True)
    assert not (tmp_path / "styles.csv.bak").exists()  # nothing to back up yet
    atomic_write(path, "second", keep_backup=True)
    assert path.read_text() == "second" and (tmp_path / "styles.csv.bak").read_text() == "first"
    assert _leftovers(tmp_path) == []


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "p.txt", b"x")
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644  # not mkstemp's 0600


def _opts(**values):
    defaults = {"outdir_samples": "", "outdir_grids": "", "outdir_txt2img_samples": "outputs/txt2img-images",
                "outdir_img2img_samples": "outputs/img2img-images", "outdir_extras_samples": "outputs/extras-images",
                "outdir_txt2img_grids": "outputs/txt2img-grids", "outdir_img2img_grids": "outputs/img2img-grids"}
    return {**defaults, **values}.get


def test_output_dir_per_kind_under_data_dir(tmp_path):
    data = str(tmp_path)
    get = _opts()
    assert output_dir(get, "txt2img", data) == os.path.join(data, "outputs/txt2img-images")
    assert output_dir(get, "img2img", data) == os.path.join(data, "outputs/img2img-images")
    assert output_dir(get, "extras", data) == os.path.join(data, "outputs/extras-images")
    assert output_dir(get, "txt2img", data, grid=True) == os.path.join(data, "outputs/txt2img-grids")
    assert output_dir(get, "img2img", data, grid=True) == os.path.join(data, "outputs/img2img-grids")


def test_output_dir_common_folder_wins_and_absolute_stays(tmp_path):
    data = str(tmp_path)
    get = _opts(outdir_samples="all", outdir_grids="/abs/grids")
    assert output_dir(get, "txt2img", data) == os.path.join(data, "all")
    assert output_dir(get, "extras", data) == os.path.join(data, "all")
    assert output_dir(get, "img2img", data, grid=True) == "/abs/grids"
    # outdir_samples does not steer grids, and outdir_grids not samples (A1111)
    assert output_dir(_opts(outdir_samples="all"), "txt2img", data, grid=True) == os.path.join(
        data, "outputs/txt2img-grids")
    assert output_dir(_opts(outdir_txt2img_samples="/elsewhere"), "txt2img", data) == "/elsewhere"


def test_under_data_dir():
    assert under_data_dir("log/images", "/d") == "/d/log/images"
    assert under_data_dir("/x", "/d") == "/x"
    assert under_data_dir(None, "/d") == "/d/"
