"""A stand-in for the one training subprocess of the experiment runner
(:func:`mpn_plugin.experiments.runner.run_training`): records each command and lets the test
write the run's results.json."""
import os

from mpn_plugin.experiments import runner


def fake_training_subprocess(monkeypatch, write_results):
    """Patch the runner's ``subprocess.run``; ``write_results(cmd, save_dir)`` writes the
    results of the fake run. Returns the list of recorded commands."""
    cmds = []

    class Done:
        returncode = 0

    def fake_run(cmd, cwd=None, stdout=None, stderr=None):
        cmds.append(cmd)
        save_dir = cmd[cmd.index("data.save_dir") + 1]
        os.makedirs(save_dir, exist_ok=True)
        write_results(cmd, save_dir)
        return Done()

    monkeypatch.setattr(runner.subprocess, "run", fake_run)
    return cmds
