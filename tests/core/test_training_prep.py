"""Extras' "postprocessing for training" (issue 16 item 4): split oversized, auto focal point crop, auto-sized crop
and flipped copies, as A1111 v1.10's postprocessing scripts compute them, run through the Extras core (files and
sizes on disk)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from webui.core.postprocess import training_prep as tp
from webui.core.postprocess.extras import EXTRAS_DIRECTORY, ExtrasOptions, run_extras
from webui.core.postprocess.face_restore import FaceRestoreFolders, FaceRestorers
from webui.core.postprocess.upscalers import UpscalerFolders, UpscalerRegistry
from webui.core.settings import Settings


def noise(w, h, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_split_pic_tiles_as_a1111():
    # 64 wide, 256 tall, target 64x64: ratio 0.25 < threshold 0.5 -> split with 20% overlap
    tiles = tp.split_oversized(noise(64, 256), 64, 64, threshold=0.5, overlap_ratio=0.2)
    # A1111: split_count = ceil((256 - 64*0.2) / (64*0.8)) = 5, y_step = (256-64)/4 = 48
    assert len(tiles) == 5 and all(t.size == (64, 64) for t in tiles)
    src = noise(64, 256)
    assert np.array_equal(np.asarray(tiles[1]), np.asarray(src.crop((0, 48, 64, 112))))
    assert tp.split_oversized(noise(64, 100), 64, 64, 0.5, 0.2) is None  # ratio 0.64 > threshold: left alone
    wide = tp.split_oversized(noise(300, 60), 64, 64, 0.5, 0.2)  # landscape: tiles along x after resizing to h=64
    assert wide and all(t.size == (64, 64) for t in wide)


def test_auto_sized_crop_and_flips():
    img = noise(300, 200)
    out = tp.multicrop_pic(img, 64, 256, 64 * 64, 256 * 256, "Maximize area", 0.1)
    # multiples of 64 with aspect error <= 0.1 against 1.5, largest area: 192x128 (1.5) vs 256x192 (1.333: err 0.11)
    assert out.size == (192, 128)
    assert tp.multicrop_pic(img, 64, 64, 64 * 64, 64 * 64, "Maximize area", 0.1) is None  # 1:1 is too far from 3:2
    flips = tp.flipped_copies(img, ("Horizontal", "Vertical", "Both"))
    a = np.asarray(img)
    assert [np.array_equal(np.asarray(f), x) for f, x in zip(flips, (a[:, ::-1], a[::-1], a[::-1, ::-1]))] == [True] * 3


def test_focal_crop_finds_the_busy_part_and_says_when_faces_are_not_looked_for(tmp_path):
    # a flat grey canvas with a busy patch on the right: the crop moves there
    canvas = Image.new("RGB", (256, 64), (128, 128, 128))
    canvas.paste(noise(48, 48, seed=3), (190, 8))
    detector = tp.face_detector(str(tmp_path / "models"))
    if detector.kind is None:
        assert "face weight ignored" in detector.note and tp.YUNET_FILES[0] in detector.note
    crop, debug = tp.focal_crop(canvas, 64, 64, face_weight=0.9, entropy_weight=0.15, edges_weight=0.5,
                                detector=detector, debug=True)
    assert crop.size == (64, 64) and debug.size == (256, 64)
    x = np.asarray(canvas).std(axis=(0, 2))  # where the busy columns are
    left = [i for i in range(193) if np.array_equal(np.asarray(canvas.crop((i, 0, i + 64, 64))), np.asarray(crop))]
    assert left and left[0] >= 150, left  # the crop sits over the patch (190..238)
    assert x[left[0]:left[0] + 64].mean() > x.mean()


def test_extras_runs_them_in_order_and_saves_every_image(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 200).save(src / "tall.png")
    noise(64, 64, seed=1).save(src / "square.png")
    out = tmp_path / "out"
    upscalers = UpscalerRegistry(UpscalerFolders.under(str(tmp_path / "m")), device="cpu")
    restorers = FaceRestorers(FaceRestoreFolders.under(str(tmp_path / "m")), device="cpu")
    opts = ExtrasOptions(resize_mode=1, upscaling_resize_w=64, upscaling_resize_h=64, upscaler_1="None",
                         split_enabled=True, flip_enabled=True, flip_options=("Horizontal",), focal_enabled=True,
                         focal_face_weight=0.9)
    result = run_extras(EXTRAS_DIRECTORY, opts, upscalers=upscalers, restorers=restorers,
                        settings=Settings(values={"use_original_name_batch": True}), data_dir=str(tmp_path),
                        input_dir=str(src), output_dir=str(out))
    names = sorted(os.listdir(out))
    # square: itself + its flip; tall: 4 tiles (ceil((200-12.8)/51.2)), each flipped -> 8
    assert len(names) == 2 + 8, names
    assert all(Image.open(out / n).size == (64, 64) for n in names)
    assert "square.png" in names and "tall.png" in names and "tall-1.png" in names
    if tp.face_detector(str(tmp_path / "models")).kind is None:
        assert any("face weight ignored" in c for c in result.comments)


def test_extras_tab_maps_the_training_sections():
    from webui.ui.tabs import extras as tab

    opts = tab.to_request({"split_enabled": True, "split_threshold": 0.4, "split_overlap_ratio": 0.1,
                           "focal_enabled": True, "focal_face_weight": 0.0, "focal_debug": True,
                           "autosized_enabled": True, "autosized_objective": "Minimize error",
                           "flip_enabled": True, "flip_options": ["Vertical", "Both"]})
    assert (opts.split_enabled, opts.split_threshold, opts.split_overlap_ratio) == (True, 0.4, 0.1)
    assert (opts.focal_enabled, opts.focal_face_weight, opts.focal_entropy_weight, opts.focal_debug) == (
        True, 0.0, 0.15, True)
    assert (opts.autosized_enabled, opts.autosized_objective, opts.autosized_mindim) == (True, "Minimize error", 384)
    assert opts.flip_enabled and opts.flip_options == ("Vertical", "Both")
    assert tab.to_request({}) == ExtrasOptions(upscaling_resize=2.0, flip_options=(), caption_options=())
