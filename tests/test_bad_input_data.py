"""Bad input on the data side (issue 19): prior caches of another image set, writers killed
mid-write, truncated caches, Market-1501's junk and distractors, broken links, Excel CSVs, a
wrong --parsing-dir. Each case ends in a clear error naming the file and the fix, or in a
reported skip; nothing is lost."""
import csv
import functools
import os
import os.path as osp
import re
import shlex
import shutil
import signal
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

from mpn_plugin.cli import generate_priors, prepare_dataset
from mpn_plugin.data.manifest import read_manifest
from mpn_plugin.priors import cache as cache_mod
from mpn_plugin.priors.cache import (
    DamagedPriorCacheError,
    PriorCache,
    PriorCacheWriter,
    StalePriorCacheError,
)

CACHE_NAME = "priors_synthetic_8x4.npz"   # the tiny fixture's cache for 128x64 inputs


@pytest.fixture
def default_priors():
    """Prior-aware datasets with the default options (the cache found in the dataset folder)."""
    from mpn_plugin.data import PriorOptions, register_prior_datasets
    register_prior_datasets(PriorOptions(feature_stride=16))
    yield
    register_prior_datasets()


def copy_dataset(tiny_root, tmp_path):
    """A copy of the tiny synthetic dataset (with its prior caches) under a new data root."""
    root = tmp_path / "data"
    shutil.copytree(osp.join(tiny_root, "synthetic_pedestrians"), root / "synthetic_pedestrians")
    return str(root)


def first_train_item(root):
    """Item 0 of the prior-aware train set: what training reads first."""
    from mpn_plugin import compat
    tr, _ = compat.data.transforms.build_transforms(128, 64, transforms=["random_flip"])
    ds = compat.data.datasets.init_image_dataset("synthetic_pedestrians", root=root, mode="train",
                                                  transform=tr, verbose=False)
    return ds[0]


def cache_arrays(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != "header"}


def assert_same_cache(a, b):
    x, y = cache_arrays(a), cache_arrays(b)
    assert sorted(x) == sorted(y)
    for k in x:
        assert np.array_equal(x[k], y[k]), k


def generate(root, *extra):
    return generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", str(root),
                                 "--adapter", "synthetic", "--height", "128", "--width", "64",
                                 "--workers", "1", *map(str, extra)])


# --------------------------------------------------------------- priors of another image set
def test_training_rejects_priors_made_for_other_images_with_same_names(tiny_root, tmp_path,
                                                                       default_priors):
    root = copy_dataset(tiny_root, tmp_path)
    first_train_item(root)                     # a moved copy of the same images is fine
    d = osp.join(root, "synthetic_pedestrians", "bounding_box_train")
    changed = sorted(os.listdir(d))[:3]
    for name in changed:                       # other pictures under the same file names
        with Image.open(osp.join(d, name)) as im:
            im.transpose(Image.FLIP_TOP_BOTTOM).save(osp.join(d, name), quality=60)
    with pytest.raises(StalePriorCacheError) as err:
        first_train_item(root)
    msg = str(err.value)
    assert osp.join(root, "synthetic_pedestrians", CACHE_NAME) in msg
    assert "3 of 128 images differ" in msg
    assert all(f"bounding_box_train/{n}" in msg for n in changed)
    assert "generate_priors.py" in msg and "--height 128 --width 64" in msg and "--overwrite" in msg


def test_same_size_other_content_and_missing_files_are_found(tmp_path):
    """Sizes catch most replaced images; content digests catch the same-size ones (e.g. BMP)."""
    from mpn_plugin.priors import coarse_prior_from_mask
    imgs = tmp_path / "imgs"
    os.makedirs(imgs)
    rels = [f"{i}.bmp" for i in range(4)]
    for i, rel in enumerate(rels):
        Image.fromarray(np.full((16, 8, 3), i, np.uint8)).save(imgs / rel)
    w = PriorCacheWriter(str(tmp_path / "p.npz"), {"tool": "t", "tool_version": "1",
                                                   "feature_size": [4, 2]}, image_root=str(imgs))
    for rel in rels:
        w.add(rel, None, coarse_prior_from_mask(None, (4, 2)))
    cache = w.finish()
    assert cache.changed_images(str(imgs)) == []
    Image.fromarray(np.full((16, 8, 3), 200, np.uint8)).save(imgs / "1.bmp")   # same size
    os.remove(imgs / "3.bmp")
    assert cache.changed_images(str(imgs)) == [("1.bmp", "same size, other content"),
                                               ("3.bmp", "file missing")]
    assert cache.changed_images(str(imgs), relpaths=["0.bmp", "2.bmp", "other.bmp"]) == []
    with pytest.raises(StalePriorCacheError, match=r"2 of 4 images differ.*'1\.bmp'"):
        cache.check_images(str(imgs))
    # a cache of an older version (no per-image signatures): its header fingerprint is checked
    rels = rels[:3]
    header = {"tool": "t", "tool_version": "1", "feature_size": [4, 2], "dataset_dir": str(imgs),
              "fingerprint": cache_mod.dataset_fingerprint(str(imgs), rels)}
    w = PriorCacheWriter(str(tmp_path / "old.npz"), header)
    for rel in rels:
        w.add(rel, None, coarse_prior_from_mask(None, (4, 2)))
    old = w.finish()
    assert old.changed_images(str(imgs)) == []
    Image.fromarray(np.zeros((16, 9, 3), np.uint8)).save(imgs / "2.bmp")    # another size
    assert old.changed_images(str(imgs))[0][1].startswith("file sizes differ")


# --------------------------------------------------------------- kill during a chunk write
WRITER_SCRIPT = """
import importlib, io, os, signal, sys, types
import numpy as np
sys.modules["torch"] = None            # the torch-free prior environment: a fast start
cache = importlib.import_module("mpn_plugin.priors.cache")
mode, path = sys.argv[1:]
records = []
for i in range(9):
    m = np.zeros((16, 8), bool); m[1 + i % 5:15, 2:6] = True
    feat = np.zeros((8, 4), np.float32); feat[i % 4:, 1:3] = 1
    prior = types.SimpleNamespace(mask=feat, top=0.1 * (i % 3), bottom=0.9,
                                  case="fallback" if i % 4 == 0 else "prior")
    records.append((f"train/{{i:03d}}.jpg", None if i % 4 == 0 else m, prior))
real, calls = np.savez_compressed, []
def dying_savez(f, **arrays):          # the 2nd chunk: half written, then SIGKILL
    calls.append(1)
    if len(calls) == 2:
        buf = io.BytesIO(); real(buf, **arrays)
        f.write(buf.getvalue()[:len(buf.getvalue()) // 2]); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(f, **arrays)
if mode == "kill":
    cache.np.savez_compressed = dying_savez
w = cache.PriorCacheWriter(path, {{"tool": "t", "tool_version": "1", "feature_size": [8, 4],
                                   "fingerprint": "f"}}, chunk_size=3)
print("resumed", len(w.done), flush=True)
for r in records:
    if r[0] not in w.done:
        w.add(*r)
w.finish()
"""


def run_writer(mode, path):
    script = WRITER_SCRIPT.format()
    return subprocess.run([sys.executable, "-c", script, mode, str(path)], capture_output=True,
                          text=True, timeout=60)


def test_writer_killed_mid_chunk_write_keeps_previous_chunks_and_resumes(tmp_path):
    path = tmp_path / "priors.npz"
    proc = run_writer("kill", path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    parts = tmp_path / "priors.npz.parts"
    left = sorted(os.listdir(parts))
    assert "chunk_00000.npz" in left and "chunk_00001.npz" not in left
    assert any(n.endswith(".tmp") for n in left)          # the half-written temporary
    assert len(np.load(parts / "chunk_00000.npz")["relpaths"]) == 3   # previous chunk loads
    (parts / "chunk_00001.npz.tmp.npz").write_bytes(b"PK\x03\x04 half")  # older versions' name
    proc = run_writer("resume", path)
    assert proc.returncode == 0, proc.stderr
    assert "resumed 3" in proc.stdout and not osp.exists(parts)
    assert run_writer("clean", tmp_path / "clean.npz").returncode == 0
    assert_same_cache(path, tmp_path / "clean.npz")


def test_generation_interrupted_mid_write_with_damaged_chunks_resumes_and_overwrite_recovers(
        tiny_root, tmp_path, monkeypatch):
    out = tmp_path / "p.npz"
    reference = osp.join(tiny_root, "synthetic_pedestrians", CACHE_NAME)
    monkeypatch.setattr(generate_priors.cache_mod, "PriorCacheWriter",
                        functools.partial(PriorCacheWriter, chunk_size=16))
    real, calls = np.savez_compressed, []

    def interrupted_savez(f, **arrays):            # Ctrl-C while the 3rd chunk is written
        calls.append(1)
        if len(calls) == 3:
            f.write(b"PK\x03\x04 partial")
            raise KeyboardInterrupt
        real(f, **arrays)
    monkeypatch.setattr(np, "savez_compressed", interrupted_savez)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny_root, "--out", out)
    monkeypatch.setattr(np, "savez_compressed", real)
    parts = tmp_path / "p.npz.parts"
    assert sorted(os.listdir(parts)) == ["chunk_00000.npz", "chunk_00001.npz", "header.json"]
    # what a SIGKILL leaves (temporaries) and a disk-full truncated chunk
    (parts / "chunk_00002.npz.tmp.npz").write_bytes(b"PK\x03\x04")
    (parts / "chunk_00002.npz.x1y2.tmp").write_bytes(b"PK\x03\x04")
    data = (parts / "chunk_00000.npz").read_bytes()
    (parts / "chunk_00000.npz").write_bytes(data[:len(data) // 3])
    with pytest.warns(UserWarning, match=r"damaged chunk .*chunk_00000\.npz"):
        summary = generate(tiny_root, "--out", out)
    assert summary["images"] == 128
    assert_same_cache(str(out), reference)                 # as if never interrupted
    # --overwrite always recovers, even from an unfinished run of other settings
    os.makedirs(parts)
    (parts / "header.json").write_text('{"tool": "other"}')
    (parts / "chunk_00000.npz").write_bytes(b"garbage")
    generate(tiny_root, "--out", out, "--overwrite")
    assert_same_cache(str(out), reference)
    assert not osp.exists(parts)


KILLED_GENERATOR = """
import functools, os, signal, sys
# Python installs its Ctrl-C handler only when SIGINT is in its default state at start; a
# test run started from a background job or `nohup` hands its children SIGINT ignored, and the
# interrupt below would then do nothing. Restore what an interactive start gives.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.modules["torch"] = None            # the torch-free prior environment: a fast start
import mpn_plugin.cli.generate_priors as g
sig, at = int(sys.argv[1]), int(sys.argv[2])
class Killed(g.cache_mod.PriorCacheWriter):
    def flush(self):                   # interrupted right after chunk `at` was written
        super().flush()
        if len(self._parts()) == at:
            os.kill(os.getpid(), sig)
g.cache_mod.PriorCacheWriter = functools.partial(Killed, chunk_size=16)
g.main(sys.argv[3:])
"""


@pytest.fixture(scope="module")
def crops_with_parsing(tiny_root, tmp_path_factory):
    """A plain folder of the tiny set's train crops and a folder of their parsing maps."""
    d = osp.join(tiny_root, "synthetic_pedestrians")
    base = tmp_path_factory.mktemp("crops")
    os.makedirs(base / "parsing")
    shutil.copytree(osp.join(d, "bounding_box_train"), base / "imgs")
    for name in os.listdir(osp.join(d, "maps", "bounding_box_train")):
        if name.endswith("_parsing.png"):
            shutil.copyfile(osp.join(d, "maps", "bounding_box_train", name),
                            base / "parsing" / name.replace("_parsing", ""))
    return base


@pytest.mark.parametrize("sig, workers", [(signal.SIGINT, 1), (signal.SIGKILL, 2)],
                         ids=["sigint-1-worker", "sigkill-2-workers"])
def test_generation_killed_resumes_to_the_same_cache(crops_with_parsing, tmp_path, monkeypatch,
                                                     capsys, sig, workers):
    base, out = crops_with_parsing, tmp_path / "p.npz"
    args = ["--images", str(base / "imgs"), "--adapter", "parsing", "--parsing-dir",
            str(base / "parsing"), "--height", "128", "--width", "64"]
    script = KILLED_GENERATOR
    proc = subprocess.Popen([sys.executable, "-c", script, str(int(sig)), "3", *args, "--workers",
                             str(workers), "--out", str(out)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # pool workers a SIGKILLed parent leaves
        except ProcessLookupError:
            pass
    # an uncaught KeyboardInterrupt ends Python by re-raising SIGINT (exit status -SIGINT);
    # anything else (a clean exit, a traceback's 1, a hang killed above) is a failure
    assert proc.returncode == -sig, (proc.returncode, err)
    assert not osp.exists(out), err
    assert len([n for n in os.listdir(str(out) + ".parts") if n.endswith(".npz")]) == 3
    monkeypatch.setattr(generate_priors.cache_mod, "PriorCacheWriter",
                        functools.partial(PriorCacheWriter, chunk_size=16))
    capsys.readouterr()
    resumed = generate_priors.main([*args, "--workers", "1", "--out", str(out)])
    assert "128 images (48 already done)" in capsys.readouterr().out
    clean = generate_priors.main([*args, "--workers", "1", "--out", str(tmp_path / "clean.npz")])
    assert resumed["images"] == clean["images"] == 128
    assert_same_cache(out, tmp_path / "clean.npz")


# --------------------------------------------------------------- truncated cache file
def truncate(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * keep)])


def test_truncated_cache_names_the_file_and_the_command(tiny_root, tmp_path, default_priors):
    root = copy_dataset(tiny_root, tmp_path)
    path = osp.join(root, "synthetic_pedestrians", CACHE_NAME)
    truncate(path)
    # training
    with pytest.raises(DamagedPriorCacheError, match=rf"'{path}' is damaged.*generate_priors\.py"
                                                     rf".*--overwrite"):
        first_train_item(root)
    # re-generation without --overwrite: one command, the generator's own (no placeholders)
    with pytest.raises(SystemExit, match=rf"'{path}' is damaged.*--overwrite") as exc:
        generate(root)
    argv = the_one_command(str(exc.value))
    assert argv[argv.index("--dataset") + 1] == "synthetic_pedestrians"
    assert argv[argv.index("--root") + 1] == osp.abspath(root)
    assert argv[argv.index("--adapter") + 1] == "synthetic" and argv[-1] == "--overwrite"
    assert (argv[argv.index("--height") + 1], argv[argv.index("--width") + 1]) == ("128", "64")
    assert generate_priors.main(argv[2:] + ["--workers", "1"])["images"] == 128   # as printed
    assert_same_cache(path, osp.join(tiny_root, "synthetic_pedestrians", CACHE_NAME))
    truncate(path)
    assert generate(root, "--overwrite")["images"] == 128
    assert_same_cache(path, osp.join(tiny_root, "synthetic_pedestrians", CACHE_NAME))
    first_train_item(root)
    # not a zip at all
    with open(path, "wb") as f:
        f.write(b"\x00" * 100)
    with pytest.raises(DamagedPriorCacheError, match="is damaged"):
        PriorCache.load(path)


def the_one_command(message):
    """The single generate_priors.py command an error names, split as a shell would."""
    assert message.count("generate_priors.py") == 1, message       # one command, not two
    assert "<" not in message, message                                # no placeholders
    found = re.search(r"(?:Regenerate it|Rebuild it|make it with): (.+)$", message, re.M)
    assert found, message
    argv = shlex.split(found.group(1).split("; ")[0])
    assert argv[1].endswith("generate_priors.py"), argv
    return argv


def test_cache_of_another_feature_size_names_the_command_for_the_run(tiny_root, tmp_path):
    """mpn.prior.cache_file of a 4x2 cache (64x32 inputs) for a 128x64 run: the one command
    printed makes the 8x4 cache into that file (it used to repeat --height 64 --width 32)."""
    from mpn_plugin.data import PriorOptions, register_prior_datasets
    root = copy_dataset(tiny_root, tmp_path)
    path = osp.join(root, "synthetic_pedestrians", "priors_synthetic_4x2.npz")
    register_prior_datasets(PriorOptions(feature_stride=16, cache_file=path))
    try:
        with pytest.raises(StalePriorCacheError, match=r"feature_size=\[4, 2\].*\[8, 4\]") as exc:
            first_train_item(root)
        argv = the_one_command(str(exc.value))
        assert (argv[argv.index("--height") + 1], argv[argv.index("--width") + 1]) == ("128", "64")
        assert argv[argv.index("--out") + 1] == path and argv[-1] == "--overwrite"
        generate_priors.main(argv[2:] + ["--workers", "1"])              # run as printed
        assert first_train_item(root)["prior_mask"].shape == (8, 4)
    finally:
        register_prior_datasets()


@pytest.mark.parametrize("height, width, shown", [(8, 8, "0x0"), (128, 8, "8x0")])
def test_generator_input_smaller_than_the_stride_names_the_smallest_size(tiny_root, height,
                                                                         width, shown):
    with pytest.raises(SystemExit, match=rf"feature map would be {shown}.*smallest is --height 16 "
                                         r"--width 16"):
        generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", tiny_root,
                              "--adapter", "synthetic", "--height", str(height), "--width",
                              str(width), "--workers", "1", "--out", "unused.npz"])


def test_generator_at_the_smallest_size_makes_a_1x1_cache(tiny_root, tmp_path):
    out = tmp_path / "p.npz"
    generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", tiny_root, "--adapter",
                          "synthetic", "--height", "16", "--width", "16", "--workers", "1",
                          "--out", str(out), "--max-fallback-share", "1"])
    cache = PriorCache.load(str(out), expected_feature_size=(1, 1))
    assert len(cache) == 128 and cache.get(cache.relpaths()[0]).mask.shape == (1, 1)


# --------------------------------------------------------------- prepare_dataset
def market_crop(path, value):
    Image.fromarray(np.full((64, 32, 3), value, np.uint8)).save(path, quality=95)


def test_market_preset_skips_junk_and_keeps_distractors_in_the_gallery(tmp_path):
    crops = tmp_path / "market"
    os.makedirs(crops)
    v = iter(range(1, 250))
    for pid in range(1, 7):
        for cam in (1, 2, 3):
            market_crop(crops / f"{pid:04d}_c{cam}s1_{pid * 10 + cam:06d}_00.jpg", next(v))
    for k in range(2):
        market_crop(crops / f"-1_c{k + 1}s1_{k:06d}_00.jpg", next(v))        # junk
    for k in range(3):
        market_crop(crops / f"0000_c{k + 1}s2_{k:06d}_01.jpg", next(v))      # distractors
    os.symlink(tmp_path / "gone.jpg", crops / "0001_c1s1_999999_00.jpg")    # dangling link
    os.makedirs(crops / "0002_c1s1_888888_00.jpg")                           # a folder
    s = prepare_dataset.main(["--images", str(crops), "--preset", "market1501", "--num-test-ids",
                              "2", "--out", str(tmp_path / "o"), "--quiet"])
    rows = read_manifest(str(tmp_path / "o" / "manifest.csv"))
    assert -1 not in {r.pid for r in rows}
    assert sorted(r.split for r in rows if r.pid == 0) == ["gallery"] * 3
    assert 0 not in {r.pid for r in rows if r.split in ("train", "query")}
    assert s["counts"]["train"]["identities"] == 4            # 6 identities - 2 test, no pid 0
    assert s["junk"]["count"] == 2 and s["distractors"]["count"] == 3
    reasons = {it["item"]: it["reason"] for it in s["skipped"]["items"]}
    assert reasons["-1_c1s1_000000_00.jpg"].startswith("junk image (pid -1")
    assert reasons["0001_c1s1_999999_00.jpg"].startswith("broken symbolic link")
    assert reasons["0002_c1s1_888888_00.jpg"] == "a folder, not an image file"
    assert s["skipped"]["count"] == 4
    assert s["skipped"]["by_reason"] == {"junk image": 2, "broken symbolic link": 1,
                                         "a folder, not an image file": 1}


def test_csv_and_manifest_written_by_excel_with_a_bom(tmp_path):
    os.makedirs(tmp_path / "imgs")
    with open(tmp_path / "labels.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(["path", "pid", "camid"])
        for pid in (1, 2, 3):
            for cam in (0, 1):
                market_crop(tmp_path / "imgs" / f"{pid}_{cam}.jpg", 40 * pid + cam)
                w.writerow([f"imgs/{pid}_{cam}.jpg", pid, cam])
        w.writerow(["imgs/link.jpg", 4, 0])
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "imgs" / "link.jpg")
    s = prepare_dataset.main(["--csv", str(tmp_path / "labels.csv"), "--num-test-ids", "1",
                              "--out", str(tmp_path / "o"), "--quiet"])
    assert s["counts"]["train"]["images"] == 4
    assert s["skipped"]["items"][0]["reason"].startswith("broken symbolic link")
    manifest = tmp_path / "o" / "manifest.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes())    # saved again by Excel
    assert len(read_manifest(str(manifest))) == 6
    args = types.SimpleNamespace(manifest=str(manifest), images=None, dataset=None, splits="all")
    _, items, _ = generate_priors.list_images(args)
    assert len(items) == 6


# --------------------------------------------------------------- a wrong --parsing-dir
def parsing(tiny_root, folder, out, *extra):
    return generate_priors.main(["--dataset", "synthetic_pedestrians", "--root", tiny_root,
                                 "--adapter", "parsing", "--parsing-dir", str(folder),
                                 "--height", "128", "--width", "64", "--workers", "1",
                                 "--out", str(out), *extra])


def test_missing_parsing_dir_is_an_error_and_all_fallbacks_fail_loudly(tiny_root, tmp_path):
    out = tmp_path / "p.npz"
    with pytest.raises(SystemExit, match=r"parsing folder '.*parsnig' \(--parsing-dir\) does "
                                         r"not exist"):
        parsing(tiny_root, tmp_path / "parsnig", out)
    assert not osp.exists(out)
    empty = tmp_path / "wrong_folder"           # exists, but holds no maps of these images
    os.makedirs(empty)
    with pytest.raises(SystemExit, match=r"128 of 128 images \(100%\) got the fallback prior.*"
                                         r"--max-fallback-share 0\.5.*--overwrite"):
        parsing(tiny_root, empty, out)
    assert PriorCache.load(str(out)).summary()["fallbacks"] == 128   # kept, nothing lost
    with pytest.raises(SystemExit, match="--max-fallback-share"):   # rerun: still not silent
        parsing(tiny_root, empty, out)
    assert parsing(tiny_root, empty, out, "--max-fallback-share", "1")["fallback_fraction"] == 1.0
