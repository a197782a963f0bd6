"""mpn_plugin.file_io: the atomic writes behind checkpoints, results.json and reports."""
import json
import os

import pytest

from mpn_plugin import file_io


def test_write_json_round_trip_and_permissions(tmp_path):
    path = tmp_path / "results.json"
    file_io.write_json(str(path), {"mAP": 0.5, "rows": [1, 2]})
    assert json.loads(path.read_text()) == {"mAP": 0.5, "rows": [1, 2]}
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    assert (path.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)
    assert sorted(os.listdir(tmp_path)) == ["plain.txt", "results.json"]


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    file_io.write_json(str(path), {"mAP": 0.5})
    with pytest.raises(TypeError):
        file_io.write_json(str(path), {"mAP": object()})      # not JSON: fails before writing
    assert json.loads(path.read_text()) == {"mAP": 0.5}

    def killed(tmp):
        with open(tmp, "w") as f:
            f.write('{"mAP": 0.')                              # half a file, then the crash
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        file_io.save_atomically(killed, str(path))
    assert json.loads(path.read_text()) == {"mAP": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]


def test_runner_write_text_is_the_shared_one():
    from mpn_plugin.experiments import runner
    assert runner.write_text is file_io.write_text
