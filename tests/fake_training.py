"""A stand-in for the training subprocess of the experiment tools (run_ablation,
run_real_crops): records each command and lets the test write the run's results.json."""
import os


def fake_training_subprocess(monkeypatch, tool_module, write_results):
    """Patch ``tool_module.subprocess.run``; ``write_results(cmd, save_dir)`` writes the
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

    monkeypatch.setattr(tool_module.subprocess, "run", fake_run)
    return cmds
