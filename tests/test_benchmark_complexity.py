"""mpn_plugin/benchmarks/complexity.py, run by tools/benchmark_complexity.py (Table 9 at CPU
scale): the JSON contract of the complexity issue and the numbers that follow from the
architecture (no timing thresholds: timing is noisy, the tool reports ratios measured side by
side, with their spread and the machine)."""
import json
import os

import pytest

from mpn_plugin.benchmarks import complexity as benchmark_complexity

KEYS = {"params_train", "params_test", "gflops", "gflops_train", "train_ms_per_img",
        "infer_ms_per_img"}
SPREAD = {f"{kind}_ms_per_img{stat}" for kind in ("train", "infer") for stat in ("_min", "_max")}
TINY = ["--height", "96", "--width", "32", "--batch", "2", "--repeats", "2", "--warmup", "0",
        "--threads", "1"]


def test_json_keys_params_and_flop_ratios(tmp_path, capsys):
    out = tmp_path / "c.json"
    md = tmp_path / "c.md"
    benchmark_complexity.main(TINY + ["--models", "mpn_o", "mpn", "mpn_baseline", "pcb_p6",
                                      "--json", str(out), "--out", str(md)])
    data = json.loads(out.read_text())
    res = data["models"]
    assert set(res) == {"mpn_o", "mpn", "mpn_baseline", "pcb_p6"}
    for name, r in res.items():
        assert KEYS | SPREAD <= set(r), name    # the spread over the repeats, per model
    # ATs, their classifiers and priors are gone at test time: MPN° has the Baseline's
    # parameters at train and test time (Sec. 4, Table 9)
    o, b = res["mpn_o"], res["mpn_baseline"]
    assert o["params_train"] == o["params_test"] == b["params_test"]
    assert res["mpn"]["params_test"] > o["params_test"]                 # + the CA modules
    # the K first 1x1 convs on every position of F (6 x 2 at 96x32): 6 x 2048 x 512 x 12 MACs,
    # where the Baseline's heads see one strip (1/6 of the positions) each
    extra = 2 * 6 * 2048 * 512 * 12 * (1 - 1 / 6) / 1e9
    assert abs((o["gflops"] - b["gflops"]) - extra) < 0.02 * extra
    assert o["gflops_train"] > o["gflops"]                              # ATs in training only
    # the machine facts that change the answer, in the JSON, the printout and the Markdown
    m = data["machine"]
    assert m["threads"] == 1 and data["settings"]["batch"] == 2 and data["settings"]["repeats"] == 2
    for key in ("cpu", "cpu_capability", "blas", "onednn", "mkldnn_available", "torch"):
        assert m[key] not in (None, ""), key
    # the CPU flags are this machine's (Linux: /proc/cpuinfo), each one reported on or off
    if os.path.isfile("/proc/cpuinfo"):
        flags = next(set(line.partition(":")[2].split()) for line in open("/proc/cpuinfo")
                     if line.partition(":")[0].strip() == "flags")
        assert m["cpu_flags"] == {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni",
                                                          "avx512_bf16", "amx_tile", "amx_bf16")}
    else:
        assert m["cpu_flags"] is None
    printed = capsys.readouterr().out
    assert "MPN° vs pcb_p6, training step: time ratio" in printed
    text = md.read_text()
    assert text.startswith("Input 96x32, batch 2")
    for t in (printed, text):
        assert f"Machine: {m['cpu']}" in t and f"BLAS {m['blas']}" in t
        assert "| train min-max |" in t


def test_mobilenetv2_rows_heads_share_and_cheaper_heads(tmp_path, capsys):
    out = tmp_path / "m.json"
    benchmark_complexity.main(TINY + ["--models", "mpn_o_mobilenetv2", "mpn_baseline_mobilenetv2",
                                      "ide_mobilenetv2", "mpn_o_mobilenetv2:dim=128",
                                      "--reference", "mpn_baseline_mobilenetv2", "--heads-share",
                                      "--copies", "--json", str(out)])
    res = json.loads(out.read_text())["models"]
    o, b, ide = res["mpn_o_mobilenetv2"], res["mpn_baseline_mobilenetv2"], res["ide_mobilenetv2"]
    cheap = res["mpn_o_mobilenetv2:dim=128"]
    assert o["params_train"] == o["params_test"] == b["params_test"]
    # same trunk: the heads are what MPN° adds to the plain softmax model's test graph
    assert ide["params_test"] < o["params_test"]
    # the K first 1x1 convs (1280 -> 512) on every position of F (6 x 2) instead of one strip
    extra = 2 * 6 * 1280 * 512 * 12 * (1 - 1 / 6) / 1e9
    assert abs((o["gflops"] - b["gflops"]) - extra) < 0.02 * extra
    # heads' share: the same trunk under every model, exact FLOPs; the heads dominate MPN°
    assert o["gflops_trunk"] == b["gflops_trunk"] == ide["gflops_trunk"] == cheap["gflops_trunk"]
    assert ide["heads_share_flops_test"] == pytest.approx(0, abs=1e-3)
    assert 0.5 < o["heads_share_flops_test"] < 1 and b["heads_share_flops_test"] < 0.5
    heads = 2 * 6 * (12 * 1280 * 512 + 512 * 512) / 1e9      # MPN°'s K first + second convs
    assert o["gflops"] - o["gflops_trunk"] == pytest.approx(heads, rel=1e-3)
    for r in (o, b, ide, cheap):
        assert {"trunk_infer_ms_per_img", "trunk_train_ms_per_img", "heads_share_time_infer",
                "heads_share_time_train"} <= set(r)
    # the cheaper heads (D = 128): fewer FLOPs, and still MPN° = Baseline in parameters
    # (the Baseline at D = 128 has the same heads; at D = 512 it has more)
    saved = 2 * 6 * (12 * 1280 * (512 - 128) + 512 * 512 - 128 * 128) / 1e9
    assert o["gflops"] - cheap["gflops"] == pytest.approx(saved, rel=1e-3)
    assert cheap["params_test"] < b["params_test"]
    assert cheap["params_train"] == cheap["params_test"]
    # layout copies (exact): none at inference; in training the heads add activation-sized
    # copies only (F positions-first, the part maps), no weight-sized one (the K first convs'
    # weight alone is 6 x 512 x 1280 floats = 15.7 MB)
    assert o["copied_mb_infer"] == 0 and ide["copied_mb_infer"] == 0
    assert 0 < o["copied_mb_train"] - ide["copied_mb_train"] < 1.0
    printed = capsys.readouterr().out
    assert "Heads' share" in printed and "train time / mpn_baseline_mobilenetv2" in printed
    assert "| model | copied MB per training step | copied MB per inference |" in printed


def test_profile_prints_and_stores_the_top_ops_of_each_step(tmp_path, capsys):
    out = tmp_path / "p.json"
    benchmark_complexity.main(["--height", "64", "--width", "32", "--batch", "2", "--repeats",
                               "1", "--warmup", "0", "--threads", "1", "--models",
                               "ide_mobilenetv2", "--profile", "--profile-steps", "1",
                               "--profile-top", "4", "--json", str(out)])
    r = json.loads(out.read_text())["models"]["ide_mobilenetv2"]
    for kind in ("train", "infer"):
        ops = r[f"profile_{kind}"]
        assert len(ops) == 4 and all(o["calls"] >= 1 and o["self_cpu_ms"] >= 0 for o in ops)
        assert [o["self_cpu_ms"] for o in ops] == sorted((o["self_cpu_ms"] for o in ops),
                                                         reverse=True)
    assert any("conv" in o["op"] for o in r["profile_infer"])
    printed = capsys.readouterr().out
    assert "Profile of ide_mobilenetv2, training step" in printed
    assert "Profile of ide_mobilenetv2, inference" in printed


@pytest.mark.parametrize("spec,match", [("mpn_o:dim", "key=value"),
                                        ("pcb_p6:dim=128", "MPN-family and IDE")])
def test_bad_model_spec_fails_before_any_work(spec, match):
    with pytest.raises(ValueError, match=match):
        benchmark_complexity.main(TINY + ["--models", spec])


def test_parse_spec_overrides():
    assert benchmark_complexity.parse_spec("mpn_o:backbone=resnet18,dim=128") == (
        "mpn_o", {"backbone": "resnet18", "dim": 128})
    assert benchmark_complexity.parse_spec("pcb_p6") == ("pcb_p6", {})


def test_flops_only_takes_no_times_and_prints_dashes(tmp_path):
    out, md = tmp_path / "f.json", tmp_path / "f.md"
    benchmark_complexity.main(["--height", "64", "--width", "32", "--models",
                               "mpn_o:backbone=resnet18,dim=32", "ide:backbone=resnet18",
                               "--reference", "ide:backbone=resnet18", "--flops-only",
                               "--heads-share", "--json", str(out), "--out", str(md)])
    data = json.loads(out.read_text())
    assert data["settings"]["flops_only"] is True
    o = data["models"]["mpn_o:backbone=resnet18,dim=32"]
    ide = data["models"]["ide:backbone=resnet18"]
    assert not any(k.endswith(("_ms_per_img", "_min", "_max")) or "time" in k for k in o)
    assert o["gflops_trunk"] == ide["gflops_trunk"] and o["gflops"] > ide["gflops"]
    text = md.read_text()
    assert "--flops-only: to be measured on a quiet machine" in text
    assert "| mpn_o:backbone=resnet18,dim=32 |" in text and "| - | - |" in text


def test_fast_kernels_spec_selects_the_heads_reference_chain():
    model = benchmark_complexity.build("mpn_o:backbone=resnet18,dim=16,fast_kernels=0", (64, 32))
    assert model.main_heads.fast_kernels is model.auxiliary_heads.fast_kernels is False
    default = benchmark_complexity.build("mpn_o:backbone=resnet18,dim=16", (64, 32))
    assert default.main_heads.fast_kernels is default.auxiliary_heads.fast_kernels is True
    with pytest.raises(ValueError, match="fast_kernels"):
        benchmark_complexity.build("mpn_o:backbone=resnet18,fast_kernels=rows", (64, 32))
