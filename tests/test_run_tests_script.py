"""tools/run_tests.sh, the README's test command, around pytest (issue 30): where mediapipe
0.10.21 has wheels, a mediapipe env that cannot be made stops the command with the reason (in CI
always), and the tests are told what the command installed, so that a missing piece fails
instead of skipping. Run on a copy of the script with stand-ins for the installers and pytest."""
import os
import os.path as osp
import shutil
import stat
import subprocess

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

FAKE_PYTHON = """#!/bin/sh
# the platform check of run_tests.sh exits with $SUPPORTED; the platform line names a fake one
case "$2" in
  *sys.exit*) exit "$SUPPORTED" ;;
  *) echo "FakeOS fake64 Python 3.99.0" ;;
esac
"""
FAKE_PYTEST = """#!/bin/sh
echo "PYTEST ARGS: $*"
echo "PYTEST REQUIRE: $MPN_TESTS_REQUIRE"
"""


def executable(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def repo(tmp_path):
    """A copy of tools/run_tests.sh whose setup is a no-op, whose mediapipe installer succeeds
    or fails (``MEDIAPIPE_OK``), and whose pytest prints what it was given."""
    r = tmp_path / "repo"
    os.makedirs(r / "tools")
    os.makedirs(r / "third_party")
    os.makedirs(r / ".venv" / "bin")
    shutil.copy(osp.join(ROOT, "tools", "run_tests.sh"), r / "tools" / "run_tests.sh")
    (r / "tools" / "setup_env.sh").write_text("echo '[setup] ok'\n")
    (r / "third_party" / "mediapipe_env.sh").write_text(
        'echo "ERROR: no wheel for this machine"\n[ "$MEDIAPIPE_OK" = 1 ]\n')
    executable(r / ".venv" / "bin" / "python", FAKE_PYTEST)
    executable(tmp_path / "python", FAKE_PYTHON)
    return r


def run(repo, *args, **env):
    base = {k: v for k, v in os.environ.items()
            if k not in ("CI", "MPN_ALLOW_NO_MEDIAPIPE", "MPN_TESTS_REQUIRE")}
    base.update(PYTHON=str(repo.parent / "python"), SUPPORTED="0", MEDIAPIPE_OK="1")
    base.update(env)
    return subprocess.run(["bash", str(repo / "tools" / "run_tests.sh"), *args], env=base,
                          capture_output=True, text=True, timeout=60)


def test_mediapipe_env_made_then_everything_is_required(repo):
    r = run(repo, "-k", "x")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PYTEST ARGS: -m pytest -q -k x" in r.stdout
    assert "PYTEST REQUIRE: mobilenetv2_weights,mediapipe_env" in r.stdout


@pytest.mark.parametrize("env", [{"CI": "true"}, {},
                                 {"CI": "true", "MPN_ALLOW_NO_MEDIAPIPE": "1"}])
def test_a_failed_mediapipe_env_stops_the_command_with_its_output(repo, env):
    r = run(repo, MEDIAPIPE_OK="0", **env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "ERROR: no wheel for this machine" in r.stdout           # why, from the installer
    assert "mediapipe 0.10.21 has wheels" in r.stdout and "PYTEST" not in r.stdout


def test_the_linter_runs_before_pytest(repo):
    r = run(repo)
    assert r.returncode == 0, r.stdout + r.stderr
    lint, tests = r.stdout.find("PYTEST ARGS: -m ruff check ."), r.stdout.find("-m pytest")
    assert 0 <= lint < tests, r.stdout


def test_outside_ci_one_may_go_on_without_the_mediapipe_env(repo):
    r = run(repo, MEDIAPIPE_OK="0", MPN_ALLOW_NO_MEDIAPIPE="1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ERROR: no wheel for this machine" in r.stdout
    assert "PYTEST REQUIRE: mobilenetv2_weights\n" in r.stdout         # mediapipe tests skip


def test_a_platform_without_mediapipe_wheels_skips_its_tests_saying_so(repo):
    r = run(repo, SUPPORTED="1", MEDIAPIPE_OK="0", CI="true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no mediapipe 0.10.21 wheel for FakeOS fake64 Python 3.99.0" in r.stdout
    assert "ERROR: no wheel" not in r.stdout                          # not even attempted
    assert "PYTEST REQUIRE: mobilenetv2_weights\n" in r.stdout
