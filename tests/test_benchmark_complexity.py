"""tools/benchmark_complexity.py (Table 9 at CPU scale): the JSON contract of the complexity
issue and the numbers that follow from the architecture (no timing thresholds: timing is
noisy, the tool reports ratios measured side by side)."""
import json

import benchmark_complexity

KEYS = {"params_train", "params_test", "gflops", "gflops_train", "train_ms_per_img",
        "infer_ms_per_img"}


def test_json_keys_params_and_flop_ratios(tmp_path, capsys):
    out = tmp_path / "c.json"
    md = tmp_path / "c.md"
    benchmark_complexity.main(["--height", "96", "--width", "32", "--batch", "2", "--repeats", "1",
                               "--warmup", "0", "--threads", "1", "--models", "mpn_o", "mpn",
                               "mpn_baseline", "pcb_p6", "--json", str(out), "--out", str(md)])
    res = json.loads(out.read_text())
    assert set(res) == {"mpn_o", "mpn", "mpn_baseline", "pcb_p6"}
    for name, r in res.items():
        assert KEYS <= set(r), name
        assert r["train_ms_per_img"] > 0 and r["infer_ms_per_img"] > 0
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
    printed = capsys.readouterr().out
    assert "MPN° vs pcb_p6, training step: time ratio" in printed
    assert md.read_text().startswith("Input 96x32, batch 2")


def test_mobilenetv2_rows(tmp_path):
    out = tmp_path / "m.json"
    benchmark_complexity.main(["--height", "96", "--width", "32", "--batch", "2", "--repeats", "1",
                               "--warmup", "0", "--threads", "1", "--models", "mpn_o_mobilenetv2",
                               "mpn_baseline_mobilenetv2", "ide_mobilenetv2", "--json", str(out)])
    res = json.loads(out.read_text())
    o, b, ide = res["mpn_o_mobilenetv2"], res["mpn_baseline_mobilenetv2"], res["ide_mobilenetv2"]
    assert o["params_train"] == o["params_test"] == b["params_test"]
    # same trunk: the heads are what MPN° adds to the plain softmax model's test graph
    assert ide["params_test"] < o["params_test"]
    # the K first 1x1 convs (1280 -> 512) on every position of F (6 x 2) instead of one strip
    extra = 2 * 6 * 1280 * 512 * 12 * (1 - 1 / 6) / 1e9
    assert abs((o["gflops"] - b["gflops"]) - extra) < 0.02 * extra
