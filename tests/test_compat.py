"""Each private part of another library that gan_lab.compat relies on still behaves as gan_lab expects."""
from __future__ import annotations

from copy import deepcopy

import lightning as L
import torch
import torch.nn as nn

from gan_lab.compat import (MID_EPOCH_RESUME_WARNING, DispatchMode, aten_name, attached_trainer, clamp_, count_optimizer_step, lerp_,
                            reload_dataloaders_every_epoch, run_eagerly, sbatch_script, set_timer_train_seconds,
                            silence_mid_epoch_resume_warning, spectrally_normalised, timer_train_seconds, unsilence)


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


def test_lerp_moves_each_tensor_towards_its_target():
    tensors, targets = [torch.zeros(3), torch.ones(2, 2)], [torch.full((3,), 4.0), torch.full((2, 2), 3.0)]
    lerp_(tensors, targets, 0.25)
    assert torch.equal(tensors[0], torch.full((3,), 1.0)) and torch.equal(tensors[1], torch.full((2, 2), 1.5)), \
        "torch._foreach_lerp_ changed: update gan_lab.compat.lerp_"


def test_clamp_bounds_each_tensor_in_place():
    tensors = [torch.tensor([-3.0, 0.5, 3.0]), torch.tensor([[2.0, -0.25]])]
    clamp_(tensors, -1.0, 1.0)
    assert tensors[0].tolist() == [-1.0, 0.5, 1.0] and tensors[1].tolist() == [[1.0, -0.25]], \
        "torch._foreach_clamp_min_/_max_ changed: update gan_lab.compat.clamp_"


def test_a_copy_that_kept_the_originals_compiled_call_runs_its_own_weights_once_eager():
    net = nn.Linear(2, 1)
    net.compile(backend="eager")
    copy = deepcopy(net)
    copy._compiled_call_impl = net._compiled_call_impl  # as a deepcopy keeps it in the torch versions that do
    with torch.no_grad():
        copy.weight.zero_()
        copy.bias.zero_()
    x = torch.ones(1, 2)
    assert copy(x).item() != 0.0  # the original's weights
    run_eagerly(copy)
    assert copy(x).item() == 0.0, "Module._compiled_call_impl changed: update gan_lab.compat.run_eagerly"


class _Counted(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 1)
        self.seen: list = []

    def training_step(self, batch, batch_idx):
        self.seen.append(attached_trainer(self))
        count_optimizer_step(self.optimizers())  # counted, not stepped

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(3, 2), batch_size=1)


def test_a_counted_optimizer_step_advances_global_step_and_a_module_knows_its_trainer(tmp_path):
    module = _Counted()
    assert attached_trainer(module) is None, "LightningModule._trainer changed: update gan_lab.compat.attached_trainer"
    before = module.layer.weight.detach().clone()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module)
    assert module.seen == [trainer] * 3, "LightningModule._trainer changed: update gan_lab.compat.attached_trainer"
    assert trainer.global_step == 3, ("LightningOptimizer._on_before_step/_on_after_step changed: update "
                                      "gan_lab.compat.count_optimizer_step")
    assert torch.equal(module.layer.weight, before)


def test_lightnings_csv_writer_still_has_the_hooks_the_appending_writer_overrides():
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    for hook in ("_rewrite_with_new_header", "_check_log_dir_exists"):
        assert callable(getattr(ExperimentWriter, hook, None)), \
            f"ExperimentWriter.{hook} is gone: update gan_lab.compat.AppendingExperimentWriter"
    logger = CSVLogger("unused")
    assert hasattr(logger, "_experiment") and hasattr(logger, "_fs"), \
        "CSVLogger._experiment/_fs changed: update gan_lab.compat.appending_experiment"


def test_a_spectrally_normalised_weight_is_recognised_in_a_submodule():
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    assert spectrally_normalised(nn.Sequential(nn.ReLU(), spectral_norm(nn.Linear(2, 2)))), \
        "torch's spectral_norm parametrization changed: update gan_lab.compat.spectrally_normalised"
    assert not spectrally_normalised(nn.Sequential(nn.Linear(2, 2), weight_norm(nn.Linear(2, 2))))


def test_lightning_still_warns_of_a_mid_epoch_resume_with_the_silenced_text():
    import inspect
    import warnings

    from lightning.pytorch.loops import training_epoch_loop

    source = " ".join(inspect.getsource(training_epoch_loop).replace('"', " ").split())
    assert " ".join(MID_EPOCH_RESUME_WARNING.split()) in source, \
        "Lightning's mid-epoch resume warning changed: update gan_lab.compat.MID_EPOCH_RESUME_WARNING"
    handle = silence_mid_epoch_resume_warning()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filters.insert(0, handle)
        warnings.warn(MID_EPOCH_RESUME_WARNING + " and your dataloader is not resumable.")
        warnings.warn("another warning")
    unsilence(handle)
    assert [str(w.message) for w in caught] == ["another warning"]
    assert handle not in warnings.filters


def test_a_timers_state_holds_its_training_seconds_in_the_format_read_and_written():
    from lightning.pytorch.callbacks import Timer

    timer = Timer(duration="00:01:00:00")
    set_timer_train_seconds(timer, 7230.5)
    assert timer.time_elapsed() == 7230.5, "Timer's state format changed: update gan_lab.compat.set_timer_train_seconds"
    key = Timer.__qualname__ + "{'duration': 3600.0}"
    assert timer_train_seconds(key, timer.state_dict()) == 7230.5, \
        "Timer's state format changed: update gan_lab.compat.timer_train_seconds"
    assert timer_train_seconds("TrainingClock", {"train_seconds": 3.0}) is None


class _Loads(_Counted):
    def __init__(self) -> None:
        super().__init__()
        self.loaders = 0

    def on_fit_start(self) -> None:
        reload_dataloaders_every_epoch(self.trainer)

    def train_dataloader(self):
        self.loaders += 1
        return super().train_dataloader()


def test_a_fit_told_to_reload_its_dataloaders_rebuilds_them_every_epoch(tmp_path):
    module = _Loads()
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(module)
    assert module.loaders == 3, "Trainer.reload_dataloaders_every_n_epochs set in a fit no longer applies: update " \
                                "gan_lab.compat.reload_dataloaders_every_epoch"


def test_a_dispatch_mode_sees_the_operator_that_reads_a_value_to_the_host():
    class Seen(DispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(aten_name(func))
            return func(*args, **(kwargs or {}))

    x = torch.tensor([1.5, 2.0])
    with Seen() as seen:
        value = (x * 2).sum().item()
    assert value == 7.0
    assert seen.names == ["aten::mul", "aten::sum", "aten::_local_scalar_dense"], \
        f"torch's dispatch mode or operator schema changed ({seen.names}): update gan_lab.compat.DispatchMode/aten_name"
