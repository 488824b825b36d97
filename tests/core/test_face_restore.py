"""Face restoration (webui.core.postprocess.face_restore): files and errors, the RetinaFace / ParseNet layouts of facexlib's
weights, the detector's anchor maths, and the align -> restore -> paste-back path of A1111's
restore_with_face_helper, driven by a detector and a parser whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from webui.core.postprocess.face_restore import (
    DETECTION_WEIGHTS,
    FACE_TEMPLATE_512,
    PARSING_WEIGHTS,
    FaceRestoreFolders,
    FaceRestorers,
    FaceRestoreUnavailable,
    UnknownFaceRestorer,
    _build_parsenet,
    _build_retinaface,
    decode_boxes,
    decode_landmarks,
    find_faces,
    prior_boxes,
    restore_with_face_helper,
)


@pytest.fixture
def restorers(tmp_path):
    return FaceRestorers(FaceRestoreFolders.under(str(tmp_path / "models")), device="cpu")


def test_listing():
    assert FaceRestorers.api_list() == [{"name": "CodeFormer", "cmd_dir": None}, {"name": "GFPGAN", "cmd_dir": None}]


def test_no_model_is_a_clear_error(restorers, tmp_path):
    image = Image.new("RGB", (64, 64), (90, 90, 90))
    with pytest.raises(FaceRestoreUnavailable) as e:
        restorers.restore(image, "GFPGAN")
    message = str(e.value)
    assert str(tmp_path / "models" / "GFPGAN") in message
    assert "GFPGANv1.4.pth" in message and DETECTION_WEIGHTS in message and PARSING_WEIGHTS in message
    with pytest.raises(FaceRestoreUnavailable, match=r"CodeFormer: no model file in .*Codeformer.*codeformer-v0.1.0"):
        restorers.restore_faces(image, {"face_restoration_model": "CodeFormer"})
    with pytest.raises(UnknownFaceRestorer, match="valid: CodeFormer, GFPGAN"):
        restorers.restore(image, "RestoreFormer")


def test_model_present_but_detector_missing(restorers, tmp_path):
    gfpgan = tmp_path / "models" / "GFPGAN"
    gfpgan.mkdir(parents=True)
    (gfpgan / "GFPGANv1.4.pth").write_bytes(b"x")
    (gfpgan / "other.pth").write_bytes(b"x")  # not named GFPGAN: not the model
    assert restorers.model_file("GFPGAN") == str(gfpgan / "GFPGANv1.4.pth")
    with pytest.raises(FaceRestoreUnavailable, match=f"needs {DETECTION_WEIGHTS} .* in .*GFPGAN or .*Codeformer"):
        restorers.restore(Image.new("RGB", (64, 64)), "GFPGAN")


def test_unreadable_weights_are_a_clear_error(restorers, tmp_path):
    codeformer = tmp_path / "models" / "Codeformer"
    codeformer.mkdir(parents=True)
    (codeformer / PARSING_WEIGHTS).write_bytes(b"not a pickle")
    with pytest.raises(FaceRestoreUnavailable, match="parsing_parsenet.pth: not readable"):
        restorers.parser()


def test_parsenet_weights_load_from_the_folder(restorers, tmp_path):
    """A parsing_parsenet.pth in facexlib's key layout loads (strictly, weights only) from models/GFPGAN."""
    net = _build_parsenet()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    (tmp_path / "models" / "GFPGAN").mkdir(parents=True)
    torch.save(state, tmp_path / "models" / "GFPGAN" / PARSING_WEIGHTS)
    loaded = restorers.parser()
    assert torch.equal(loaded.state_dict()["out_mask_conv.conv2d.weight"], state["out_mask_conv.conv2d.weight"])
    assert restorers.parser() is loaded  # kept


def test_network_layouts_match_facexlib():
    """Key names and shapes of facexlib's detection_Resnet50_Final.pth and parsing_parsenet.pth."""
    retina = {k: tuple(v.shape) for k, v in _build_retinaface().state_dict().items()}
    assert len(retina) == 456
    assert retina["body.conv1.weight"] == (64, 3, 7, 7)
    assert retina["body.layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert retina["fpn.output1.0.weight"] == (256, 512, 1, 1)
    assert retina["fpn.merge2.0.weight"] == (256, 256, 3, 3)
    assert retina["ssh3.conv7x7_3.0.weight"] == (64, 64, 3, 3)
    assert retina["ClassHead.0.conv1x1.weight"] == (4, 256, 1, 1)
    assert retina["BboxHead.1.conv1x1.weight"] == (8, 256, 1, 1)
    assert retina["LandmarkHead.2.conv1x1.weight"] == (20, 256, 1, 1)
    parse = {k: tuple(v.shape) for k, v in _build_parsenet().state_dict().items()}
    assert len(parse) == 238
    assert parse["encoder.0.conv2d.weight"] == (64, 3, 3, 3)
    assert parse["encoder.1.shortcut_func.conv2d.weight"] == (128, 64, 3, 3)
    assert parse["encoder.1.conv1.norm.norm.running_mean"] == (128,)
    assert parse["body.9.conv2.conv2d.weight"] == (256, 256, 3, 3)
    assert parse["decoder.3.conv1.conv2d.weight"] == (64, 128, 3, 3)
    assert parse["out_mask_conv.conv2d.weight"] == (19, 64, 3, 3)


def test_prior_boxes_and_decoding():
    priors = prior_boxes(640, 640)
    assert priors.shape == ((80 * 80 + 40 * 40 + 20 * 20) * 2, 4)
    assert np.allclose(priors[0], [4 / 640, 4 / 640, 16 / 640, 16 / 640])
    assert np.allclose(priors[1], [4 / 640, 4 / 640, 32 / 640, 32 / 640])
    assert np.allclose(priors[-1], [(19 + 0.5) * 32 / 640, (19 + 0.5) * 32 / 640, 512 / 640, 512 / 640])
    prior = np.array([[0.5, 0.5, 0.2, 0.1]], dtype=np.float32)
    # zero offsets: the prior box itself; dx=1 moves the centre by variance 0.1 * width
    assert np.allclose(decode_boxes(np.zeros((1, 4), np.float32), prior), [[0.4, 0.45, 0.6, 0.55]])
    assert np.allclose(decode_boxes(np.array([[1, 0, 0, 0]], np.float32), prior), [[0.42, 0.45, 0.62, 0.55]])
    landm = decode_landmarks(np.arange(10, dtype=np.float32).reshape(1, 10), prior)
    assert np.allclose(landm[0, :4], [0.5, 0.5 + 1 * 0.1 * 0.1, 0.5 + 2 * 0.1 * 0.2, 0.5 + 3 * 0.1 * 0.1])


# -- the face helper path --------------------------------------------------------------------------------------------


def detection(landmarks: np.ndarray) -> np.ndarray:
    x1, y1 = landmarks.min(axis=0) - 20
    x2, y2 = landmarks.max(axis=0) + 20
    return np.array([[x1, y1, x2, y2, 0.99, *landmarks.reshape(-1)]], dtype=np.float32)


def all_face_parser(t):
    """ParseNet stand-in: every pixel is label 1 (skin)."""
    logits = torch.zeros(t.shape[0], 19, t.shape[2], t.shape[3])
    logits[:, 1] = 1
    return logits


def test_face_is_aligned_restored_and_pasted_back():
    # a 640 px image (the detector sees it at full size) with a face the size of half the template, at (100, 100);
    # a smooth gradient (R along x, G along y) so a resampled pixel has a known value
    ys, xs = np.mgrid[0:640, 0:640].astype(np.float64)
    image = np.stack([xs / 640 * 200 + 20, ys / 640 * 200 + 20, np.full_like(xs, 100)], axis=2).round().astype(np.uint8)
    landmarks = FACE_TEMPLATE_512 * 0.5 + 100
    seen = {}

    def detect(bgr):
        seen["shape"] = bgr.shape
        return detection(landmarks)

    def restore(t):
        seen["face"] = t.clone()
        return torch.ones_like(t)  # a white face

    out = restore_with_face_helper(image, restore, detect=detect, parse=all_face_parser)
    assert seen["shape"] == (640, 640, 3)
    # the restorer got the aligned 512 px face, normalised to [-1, 1], RGB: the face's pixel (257, 314) is the image's
    # point (100 + 257 / 2, 100 + 314 / 2)
    face = seen["face"]
    assert face.shape == (1, 3, 512, 512)
    x, y = 100 + 257 / 2, 100 + 314 / 2
    nose = np.array([x / 640 * 200 + 20, y / 640 * 200 + 20, 100]) / 255 * 2 - 1
    assert np.allclose(face[0, :, 314, 257].numpy(), nose, atol=0.02)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[240:280, 210:250] >= 250).all()  # the middle of the face is now white
    assert np.array_equal(out[:60, :60], image[:60, :60])  # far from the face nothing changed
    assert np.array_equal(out[500:, 500:], image[500:, 500:])


def test_small_eye_distance_and_large_images():
    image = np.full((1280, 960, 3), 100, np.uint8)
    tiny = FACE_TEMPLATE_512 * 0.01 + 300  # eyes ~1.3 px apart at 640 px: dropped (eye_dist_threshold=5)
    seen = {}

    def detect(bgr):
        seen["shape"] = bgr.shape
        return detection(tiny)

    assert find_faces(image, detect) == []
    assert seen["shape"] == (853, 640, 3)  # short side resized to 640
    out = restore_with_face_helper(image, lambda t: t, detect=detect, parse=all_face_parser)
    assert np.array_equal(out, image)


def test_restore_runs_the_networks_end_to_end(tmp_path, monkeypatch):
    """restore() with every file present: spandrel-loaded network, detector and parser from the folder."""
    restorers = FaceRestorers(FaceRestoreFolders.under(str(tmp_path)), device="cpu")
    calls = []

    class FakeNet(torch.nn.Module):
        def forward(self, x, weight=None, adain=None):
            calls.append(weight)
            return (x,)

    # Only the loading is replaced here: the files' presence is checked, the helper path runs for real.
    gf = tmp_path / "Codeformer"
    gf.mkdir()
    (gf / "codeformer-v0.1.0.pth").write_bytes(b"x")
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / DETECTION_WEIGHTS).write_bytes(b"x")
    (tmp_path / "GFPGAN" / PARSING_WEIGHTS).write_bytes(b"x")
    landmarks = FACE_TEMPLATE_512 * 0.5 + 100

    class FakeDetector(torch.nn.Module):
        pass

    monkeypatch.setattr(restorers, "network", lambda name: FakeNet())
    monkeypatch.setattr(restorers, "detector", lambda: FakeDetector())
    monkeypatch.setattr(restorers, "parser", lambda: (lambda t: (all_face_parser(t),)))
    monkeypatch.setattr("webui.core.postprocess.face_restore.retinaface_detect", lambda net, img: detection(landmarks))
    image = Image.fromarray(np.full((640, 640, 3), 80, np.uint8))
    out = restorers.restore(image, "CodeFormer", settings={"code_former_weight": 0.25})
    assert calls == [0.25] and out.size == image.size and out.mode == "RGB"
    # the identity restorer pastes the face back as it was: nearly the same image
    assert np.abs(np.asarray(out).astype(int) - 80).max() <= 2
