"""The suite passes however it is started (issue 30). A test command started from a background
job or under ``nohup`` hands every child SIGINT ignored, and Python then installs no Ctrl-C
handler: a test that interrupts its child with SIGINT must restore the handler itself. Here the
suite's SIGINT tests run in a pytest started exactly that way (CI, .ci/run, also runs the whole
suite so)."""
import os
import os.path as osp
import signal
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_tests_pass_when_the_test_command_ignores_sigint(tmp_path):
    # the child really starts with SIGINT ignored (else this test would prove nothing)
    probe = subprocess.run([sys.executable, "-c", "import signal; "
                            "print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"],
                           preexec_fn=ignore_sigint, capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "True", probe.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--basetemp", str(tmp_path / "t"), "-k", "sigint",
                        osp.join(ROOT, "tests", "test_bad_input_data.py")],
                       cwd=ROOT, preexec_fn=ignore_sigint, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "1 passed" in r.stdout, r.stdout[-3000:]
