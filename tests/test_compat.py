"""Each private part of another library that gan_lab.compat relies on still behaves as gan_lab expects."""
from __future__ import annotations

from gan_lab.compat import sbatch_script


def test_submitit_writes_the_sbatch_script_of_an_executors_parameters():
    script = sbatch_script("/tmp/sweep/.submitit/%j", {"nodes": 2, "ntasks_per_node": 4, "gpus_per_node": 4,
                                                       "signal_delay_s": 120, "time": 60,
                                                       "additional_parameters": {"requeue": True}})
    lines = script.splitlines()
    expected = ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                "#SBATCH --signal=USR2@120", "#SBATCH --time=60", "#SBATCH --requeue"]
    missing = [line for line in expected if line not in lines]
    assert not missing, f"submitit's _make_sbatch_string changed ({missing} missing): update gan_lab.compat.sbatch_script"
    assert lines[-1].startswith("srun") and lines[-1].endswith("true")
