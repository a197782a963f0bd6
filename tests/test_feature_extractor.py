"""FeatureExtractor (issue 17): the evaluator's test-time features for paths, PIL images,
RGB/BGR arrays and tensors, the ONNX path equal to the torch path, and unreadable images
named in a clear error (or skipped and reported, never dropped silently)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mpn_plugin.engine.mixins import EngineMixin
from mpn_plugin.export import export_onnx
from mpn_plugin.inference import FeatureExtractor, UnreadableImageError
from mpn_plugin.models import build_mpn
from trained_like import trained_like

H, W = 64, 32
# Features (normalised, |x| <= ~0.25) of the same float32 network on another batch split or
# thread count differ by ~1e-7 (measured: 0.4-1.0e-7, 1 or 2 threads); a wrong preprocessing,
# flip or model differs by ~1e-2. 1e-5 is the noise with a wide margin, and nothing more.
SAME = dict(atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def model():
    """ResNet-18 trunk: at random initialisation its features still follow the image (0.03-0.09
    apart between these images, 0.03 with a flip); a random MobileNetV2's are the same for every
    image to 1e-7, and a wrong image, flip or preprocessing would go unseen."""
    torch.manual_seed(0)
    return trained_like(build_mpn(num_classes=7, backbone="resnet18", dim=64))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(70, 30), (128, 64), (50, 50)]):
        arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        paths.append(str(d / f"img_{i}.png"))
        Image.fromarray(arr).save(paths[-1])
    return paths


def evaluator_features(model, images, flip=False, amp=False):
    """The project's evaluator: EngineMixin.extract_features, then test.normalize_feature."""
    engine = EngineMixin.__new__(EngineMixin)
    engine.model, engine.use_gpu, engine.flip_test, engine.amp_test = model, False, flip, amp
    return F.normalize(engine.extract_features(images), dim=1)


@pytest.mark.parametrize("flip", [False, True])
def test_extractor_equals_model_eval_and_evaluator_features(model, image_files, flip):
    extractor = FeatureExtractor(model=model, height=H, width=W, flip=flip, batch_size=2,
                                 device="cpu")
    batch = torch.stack([extractor.transform(Image.open(p).convert("RGB")) for p in image_files])
    ref = evaluator_features(model, batch, flip=flip)
    if not flip:
        with torch.no_grad():
            assert torch.allclose(ref, F.normalize(model.eval()(batch), dim=1), **SAME)
    assert torch.allclose(extractor(batch), ref, **SAME)            # preprocessed tensors
    from_paths = extractor(image_files)                                 # 2 batches of <= 2
    assert from_paths.shape == (3, 6 * 64)
    assert torch.allclose(from_paths, ref, **SAME)
    assert torch.allclose(from_paths.norm(dim=1), torch.ones(3), atol=1e-5)
    # the tolerance tells images apart: another image's features, or the other flip setting
    assert not torch.allclose(from_paths[1:], ref[:-1], **SAME)
    other = FeatureExtractor(model=model, height=H, width=W, flip=not flip, device="cpu")
    assert not torch.allclose(other(image_files), ref, **SAME)


def test_pil_rgb_and_bgr_arrays_give_the_path_features(model, image_files):
    rgb = FeatureExtractor(model=model, height=H, width=W, device="cpu")
    bgr = FeatureExtractor(model=model, height=H, width=W, device="cpu", bgr=True)
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in image_files[:2]]
    ref = rgb(image_files[:2])
    assert torch.allclose(rgb(arrays), ref, **SAME)
    assert torch.allclose(bgr([a[:, :, ::-1] for a in arrays]), ref, **SAME)
    assert torch.allclose(rgb([Image.open(p) for p in image_files[:2]]), ref, **SAME)
    assert torch.allclose(rgb(image_files[0]), ref[:1], **SAME)      # a single input
    with pytest.raises(ValueError, match="uint8"):
        rgb(arrays[0].astype(np.float32))


def test_amp_features_follow_the_evaluators_amp_path(model, image_files):
    extractor = FeatureExtractor(model=model, height=H, width=W, device="cpu", amp=True)
    batch = torch.stack([extractor.transform(Image.open(p).convert("RGB")) for p in image_files])
    out = extractor(image_files)
    assert out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(len(image_files)), atol=1e-5)
    cosine = (out * evaluator_features(model, batch, amp=True)).sum(1)   # bfloat16 on CPU
    assert cosine.min() > 0.999
    assert (out * evaluator_features(model, batch)).sum(1).min() > 0.99  # and near float32


def test_onnx_and_torch_paths_agree(model, image_files, tmp_path):
    path = str(tmp_path / "mpn.onnx")
    export_onnx(model, path, height=H, width=W)
    torch_features = FeatureExtractor(model=model, height=H, width=W, device="cpu")(image_files)
    onnx_extractor = FeatureExtractor(onnx=path, batch_size=2)         # H, W from the graph
    assert (onnx_extractor.height, onnx_extractor.width) == (H, W)
    onnx_features = onnx_extractor(image_files)
    assert onnx_features.shape == torch_features.shape
    assert (onnx_features - torch_features).abs().max() < 1e-4
    assert len(onnx_extractor.metadata["onnx_sha256"]) == 64
    with pytest.raises(ValueError, match="--flip"):
        FeatureExtractor(onnx=path, flip=True)
    with pytest.raises(ValueError, match="height 64"):
        FeatureExtractor(onnx=path, height=128)


def test_corrupt_image_gives_a_clear_error_or_is_skipped_and_reported(model, image_files,
                                                                     tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(image_files[1], "rb").read()[:200])
    missing = str(tmp_path / "missing.jpg")
    extractor = FeatureExtractor(model=model, height=H, width=W, device="cpu", batch_size=2)
    for bad in (str(corrupt), str(truncated), missing):
        with pytest.raises(UnreadableImageError, match="--skip-unreadable") as err:
            extractor([image_files[0], bad])
        assert err.value.path == bad and bad in str(err.value)
    result = extractor.extract([image_files[0], str(corrupt), image_files[1], missing],
                               skip_unreadable=True)
    assert result.indices == [0, 2]
    assert [(i, name) for i, name, _ in result.skipped] == [(1, str(corrupt)), (3, missing)]
    assert all(reason for _, _, reason in result.skipped)
    assert torch.allclose(result.features, extractor(image_files[:2]), **SAME)


def test_build_from_config_and_checkpoint_and_bad_arguments(model, tmp_path):
    from mpn_plugin import compat
    with pytest.raises(ValueError, match="exactly one"):
        FeatureExtractor(model=model, onnx="x.onnx", height=H, width=W)
    with pytest.raises(ValueError, match="config_file"):
        FeatureExtractor(checkpoint="x.pth")
    with pytest.raises(ValueError, match="height"):
        FeatureExtractor(model=model)
    trained = build_mpn(num_classes=7, backbone="resnet18", dim=64)
    x = torch.randn(2, 3, H, W)
    assert not torch.allclose(evaluator_features(trained.eval(), x), evaluator_features(model, x),
                              **SAME)                  # other weights: other features
    trained.load_state_dict(model.state_dict())
    compat.save_checkpoint({"state_dict": trained.state_dict(), "epoch": 1}, str(tmp_path))
    ckpt = str(tmp_path / "model.pth.tar-1")
    extractor = FeatureExtractor(config_file="configs/mpn_synthetic.yaml", checkpoint=ckpt,
                                 opts=["mpn.dim", "64", "mpn.backbone", "resnet18",
                                       "data.height", "64", "data.width", "32"])
    assert (extractor.height, extractor.width, extractor.flip) == (64, 32, False)
    assert extractor.metadata["checkpoint_sha256"] and extractor.metadata["config_hash"]
    assert torch.allclose(extractor(x), evaluator_features(model, x), **SAME)
