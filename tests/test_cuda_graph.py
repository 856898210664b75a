"""The captured step (``callbacks.fast_path.cuda_graph``): the static-buffer step against
``training_step`` on a CPU, the refusals, and (marked ``gpu``) the captured graph itself."""
from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from gan_lab.build import build_datamodule, build_model, build_trainer, instantiate_checked, serve_draws
from gan_lab.callbacks.fast_path import CapturedStep, FastPath, compile_refusal, make_capturable
from gan_lab.errors import UserError
from tests.conftest import NARROW_NETS, refused

NARROW = NARROW_NETS


class StaticStep(L.Callback):
    """Attaches the captured step's static-buffer function, run eagerly (``capture=False``): what a CUDA
    graph would replay, checked on a CPU against the module's own ``training_step``."""

    def __init__(self) -> None:
        self.step: CapturedStep | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.step = pl_module.captured_step = CapturedStep(pl_module, capture=False)


def fit(cfg, *callbacks):
    cfg = copy.deepcopy(cfg)  # build_datamodule publishes the data's channels and classes into it
    L.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    model = build_model(cfg)
    serve_draws(model, dm)
    trainer = build_trainer(cfg, [*callbacks], [])
    trainer.fit(model, datamodule=dm)
    return model, trainer


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def same_optimizers(a: L.Trainer, b: L.Trainer) -> bool:
    for oa, ob in zip(a.optimizers, b.optimizers):
        for pa, pb in zip(oa.state.values(), ob.state.values()):
            if any(not torch.equal(torch.as_tensor(pa[k]), torch.as_tensor(pb[k])) for k in pa):
                return False
    return True


CASES = {
    "dcgan": ["model=dcgan", *NARROW["dcgan"]],
    "dcgan-bf16": ["model=dcgan", *NARROW["dcgan"], "trainer.precision=bf16-mixed"],
    # the learning rate changes after the first epoch (a graph is captured again then)
    "dcgan-scheduler": ["model=dcgan", *NARROW["dcgan"], "scheduler=exponential", "scheduler.discriminator.gamma=0.5",
                        "scheduler.generator.gamma=0.5"],
    "cdcgan-diffaugment": ["model=cdcgan", *NARROW["cdcgan"], "d_augment=diffaugment"],
    "cgan_mlp": ["model=cgan_mlp", *NARROW["cgan_mlp"]],
    "wgan_gp-5-critic-steps": ["model=wgan_gp", *NARROW["wgan_gp"], "model.n_critic=5"],  # each on its own reals
    "wgan_gp-shared-reals": ["model=wgan_gp", *NARROW["wgan_gp"], "model.n_critic=2", "model.fresh_reals=false"],
    "wgan-weight-clip": ["model=wgan", *NARROW["wgan"], "model.critic_warmup=null"],
    # batches 1-2 and 6-7 wait for 10 critic updates before generator updates 1 and 5 (run eagerly)
    "wgan-critic-warmup": ["model=wgan", *NARROW["wgan"], "model.critic_warmup.updates=10",
                           "model.critic_warmup.first=1", "model.critic_warmup.every=4"],
    "dcgan-gradient-clip": ["model=dcgan", *NARROW["dcgan"], "model.gradient_clip_norm=0.05"],
    # one epoch of pre-training (run eagerly: D alone), then the captured schedule
    "artgan-pretraining": ["model=artgan", *NARROW["artgan"], "model.pretrain_epochs=1", "model.label_flip=0.1"],
    # the generator update draws its own images (noise drawn inside the graph twice a batch)
    "artgan-fresh-fakes": ["model=artgan", *NARROW["artgan"], "model.fresh_fakes=true"],
    "dcgan-fused-adam": ["model=dcgan", *NARROW["dcgan"], "optimizer.discriminator.fused=true",
                         "optimizer.generator.fused=true"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_static_buffer_step_computes_what_training_step_computes(make_cfg, case):
    cfg = make_cfg(*CASES[case], "data.image_size=16", "trainer.limit_train_batches=4", "trainer.max_epochs=2")
    eager, eager_trainer = fit(cfg)
    attach = StaticStep()
    static, static_trainer = fit(cfg, attach)
    steady = {"artgan-pretraining": 4, "wgan-critic-warmup": 4}.get(case, 8)   # batches the static step ran
    assert attach.step is not None and attach.step.graphed.calls == steady
    assert attach.step.graphed.follow_up is None                     # no second graph: G's updates are fixed
    assert same_state(eager, static)                            # bit for bit: weights, BatchNorm statistics
    assert same_optimizers(eager_trainer, static_trainer)
    assert static_trainer.global_step == eager_trainer.global_step > 0   # Lightning counted its optimizer steps
    assert static.batches_seen == eager.batches_seen == 8
    assert static.logged == eager.logged and "train/d_loss" in static.logged


#: 4 batches at 4x4, 4 fading in 8x8 (alpha 0, 1/4, 1/2, 3/4; optimizer state reset), 4 at 8x8 grown in
PGGAN_GROWTH = ["model=pggan", *NARROW["pggan"], "data.image_size=8", "data.batch_size=4",
                "callbacks.growth.schedule.stages=[{resolution:4,fade_images:0,stable_images:16,batch_size:null},"
                "{resolution:8,fade_images:16,stable_images:1000,batch_size:null}]",
                "trainer.limit_train_batches=4", "trainer.max_epochs=3"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_pggan_is_captured_per_phase_and_the_static_step_follows_its_fade_in(make_cfg, precision):
    """A new resolution, and the end of its fade-in, start the capture over (new buffers, warm-up
    batches, which create the optimizers' reset state); while fading, the step reads alpha from a
    device tensor, so one graph serves every batch of the fade-in."""
    cfg = make_cfg(*PGGAN_GROWTH, f"trainer.precision={precision}")
    eager, eager_trainer = fit(cfg, instantiate_checked(cfg.callbacks.growth, "callbacks.growth"))
    attach = StaticStep()
    static, static_trainer = fit(cfg, instantiate_checked(cfg.callbacks.growth, "callbacks.growth"), attach)
    step = attach.step
    assert static.phase == eager.phase == (8, 1.0) and static.batches_seen == 12
    assert step.restarts == 2 and step.key == (None, 8, False)         # (4, grown) -> (8, fading) -> (8, grown)
    assert step.graphed.calls == 4 and step.graphed.inputs[0].shape == (4, 1, 8, 8)
    assert same_state(eager, static)                                    # bit for bit through the fade-in
    assert same_optimizers(eager_trainer, static_trainer)
    assert static_trainer.global_step == eager_trainer.global_step == 24
    assert static.logged == eager.logged


#: instance noise on every D input, falling to 0 over the first 5 of 8 batches
DECAYING_NOISE = ["model=cdcgan", *NARROW["cdcgan"], "data.image_size=16", "model.instance_noise=0.2",
                  "model.instance_noise_decay=5", "trainer.limit_train_batches=4", "trainer.max_epochs=2"]


class NoiseStd(L.Callback):
    """The device's copy of the instance-noise std each batch ran with."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(pl_module.instance_noise_std.item())


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_decaying_instance_noise_is_captured_and_read_on_the_device(make_cfg, precision):
    cfg = make_cfg(*DECAYING_NOISE, f"trainer.precision={precision}")
    eager, _ = fit(cfg)
    attach, stds = StaticStep(), NoiseStd()
    static, _ = fit(cfg, attach, stds)
    assert stds.seen[:6] == pytest.approx([0.2 * (1 - k / 5) for k in range(5)] + [0.0])  # filled before each batch
    assert attach.step.restarts == 1 and attach.step.key == (None, False)  # captured again once it reached 0
    assert attach.step.graphed.calls == 3
    assert same_state(eager, static) and static.logged == eager.logged


#: D's loss falls below 1.2 after about half of the 8 batches: from then on G gets an extra update
EXTRA_G = ["model=artgan", *NARROW["artgan"], "data.image_size=16", "model.extra_g_when=d_loss",
           "model.extra_g_threshold=1.2", "trainer.limit_train_batches=4", "trainer.max_epochs=2"]


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_artgan_extra_g_update_is_a_second_graph_and_the_static_step_follows_it(make_cfg, precision):
    """The host decides after the batch's updates (from D's loss, a static output) whether G gets
    one more; that update is the second graph's, replayed only then, with fresh noise."""
    cfg = make_cfg(*EXTRA_G, f"trainer.precision={precision}")
    eager, eager_trainer = fit(cfg)
    attach = StaticStep()
    static, static_trainer = fit(cfg, attach)
    assert attach.step.graphed.calls == 8 and attach.step.graphed.follow_up is not None
    assert 0 < attach.step.graphed.follow_ups == static.extra_g_updates == eager.extra_g_updates < 8
    assert same_state(eager, static) and same_optimizers(eager_trainer, static_trainer)
    assert static_trainer.global_step == eager_trainer.global_step == 8 * 2 + eager.extra_g_updates
    assert static.logged == eager.logged and static.logged["train/extra_g_updates"] == eager.extra_g_updates


#: 16 digits, D with 8x G's learning rate, ADA adjusting p after every batch: p leaves 0 and moves
ADA = ["model=dcgan", *NARROW["dcgan"], "data.image_size=16", "data.subset=16", "data.batch_size=4",
       "optimizer.discriminator.lr=1.6e-3", "d_augment=ada", "d_augment.interval=1", "d_augment.speed_images=64",
       "trainer.limit_train_batches=4", "trainer.max_epochs=2"]


class AdaP(L.Callback):
    """ADA's p after each batch."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(pl_module.d_augment.p)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_ada_is_captured_and_reads_its_probability_on_the_device(make_cfg, precision):
    """p moves after every batch; the kernels read it from a device tensor, and the step is captured
    again only when it leaves 0 (or comes back to it)."""
    cfg = make_cfg(*ADA, f"trainer.precision={precision}")
    eager_p, static_p, attach = AdaP(), AdaP(), StaticStep()
    eager, eager_trainer = fit(cfg, eager_p)
    static, static_trainer = fit(cfg, attach, static_p)
    assert static_p.seen == eager_p.seen and len({p for p in eager_p.seen if p > 0}) >= 2
    changes = sum((a > 0) != (b > 0) for a, b in zip([0.0] + eager_p.seen[:-1], eager_p.seen[:-1]))
    assert attach.step.restarts == changes >= 1
    assert same_state(eager, static) and same_optimizers(eager_trainer, static_trainer)
    assert static.logged == eager.logged and "train/ada_p" in static.logged


def test_the_decaying_std_is_what_the_noise_reads_while_training(make_cfg):
    cfg = make_cfg(*DECAYING_NOISE)
    build_datamodule(cfg)
    model = build_model(cfg)
    model.batches_seen = 2
    assert model.capture_key() == (None, True) and model.noise_std() is model.instance_noise_std
    model.eval()
    assert model.noise_std() is None                                    # evaluation: the number
    model.train()
    model.batches_seen = 5
    assert model.capture_key() == (None, False) and model.noise_std() is None
    assert "instance_noise_std" not in model.state_dict()


def test_pggan_reads_alpha_from_the_device_while_fading(make_cfg):
    cfg = make_cfg(*PGGAN_GROWTH)
    build_datamodule(cfg)
    model = build_model(cfg)
    model.set_phase(8, 0.25)
    assert model.capture_key() == (None, 8, True) and model.alpha_tensor.item() == 0.25
    assert model.fade_weight() is model.alpha_tensor                    # training: the kernels read it
    z = torch.randn(2, model.noise.latent_dim)
    with torch.no_grad():
        images = model.generate(z, torch.zeros(2, dtype=torch.long))
        model.eval()
        assert model.fade_weight() == 0.25                              # sampling: the number
        assert torch.equal(model.generate(z, torch.zeros(2, dtype=torch.long)), images)
    model.set_phase(8, 1.0)
    assert model.capture_key() == (None, 8, False) and model.fade_weight() == 1.0
    assert "alpha_tensor" not in model.state_dict()                     # checkpoints keep the number


def test_a_batch_of_another_size_runs_eagerly(make_cfg):
    cfg = make_cfg("model=dcgan", *NARROW["dcgan"], "data.image_size=16", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=3")
    attach = StaticStep()
    fit(cfg, attach)
    real, labels = attach.step.graphed.inputs
    assert attach.step.fits(torch.zeros_like(real), torch.zeros_like(labels))
    assert not attach.step.fits(real[:-1], labels[:-1])        # an epoch's smaller last batch
    assert not attach.step.fits(real[..., :8, :8], labels)


def test_a_cpu_run_refuses_the_captured_step_in_one_sentence(make_cfg):
    cfg = make_cfg("model=dcgan", *NARROW["dcgan"], "data.image_size=16", "callbacks.fast_path.cuda_graph=true")
    with refused("callbacks.fast_path.cuda_graph=true", "cpu"):
        fit(cfg, instantiate_checked(cfg.callbacks.fast_path, "callbacks.fast_path"))
    with refused("callbacks.fast_path.cuda_graph='yes'", "true or false"):
        FastPath(cuda_graph="yes")
    with pytest.raises(UserError, match=r"^callbacks\.fast_path\.graph_warmup=0 must be "):
        instantiate_checked(make_cfg("callbacks.fast_path.graph_warmup=0").callbacks.fast_path, "callbacks.fast_path")


def test_a_variant_deciding_on_the_host_refuses_the_captured_step_before_training(make_cfg):
    cfg = make_cfg("model=dcgan", "data.image_size=16")
    build_datamodule(cfg)
    model = build_model(cfg)
    sentence = "model.my_rule=on reads D's loss between batches; leave callbacks.fast_path.cuda_graph=false."
    model.capture_refusal = lambda: sentence               # what such a variant's override returns
    trainer = L.Trainer(accelerator="cpu", logger=False)
    assert FastPath(cuda_graph=True).capture_refusal(trainer, model, "cuda") == sentence


def test_every_model_is_captured(make_cfg):
    for overrides in (["model=dcgan", "d_augment=diffaugment"], ["model=wgan_gp"], ["model=wgan"], ["model=cgan_mlp"],
                      ["model=dcgan", "d_augment=ada"], ["model=wgan_gp", "model.n_critic=5", "d_augment=ada"],
                      ["model=dcgan", "scheduler=exponential"],
                      ["model=cdcgan", "model.instance_noise=0.1"], ["model=artgan", "model.pretrain_epochs=2"],
                      ["model=pggan"], ["model=cdcgan", "model.instance_noise=0.1", "model.instance_noise_decay=100"],
                      ["model=artgan", "model.extra_g_when=d_acc", "model.extra_g_threshold=0.9"]):
        cfg = make_cfg(*overrides, "data.image_size=16")
        build_datamodule(cfg)
        model = build_model(cfg)
        assert FastPath(cuda_graph=True).capture_refusal(L.Trainer(accelerator="cpu", logger=False), model, "cuda") is None


def test_compile_modes_with_their_own_cuda_graphs_are_refused_on_a_gpu():
    refusal = compile_refusal("reduce-overhead", False, "cuda")
    assert all(s in refusal for s in ("callbacks.fast_path.compile=reduce-overhead", "CUDA graphs",
                                      "callbacks.fast_path.cuda_graph=true")), refusal
    assert "cuda_graph=true" in compile_refusal("max-autotune", True, "cuda")
    refusal = compile_refusal("max-autotune-no-cudagraphs", True, "cuda")
    assert all(s in refusal for s in ("callbacks.fast_path.compile=max-autotune-no-cudagraphs",
                                      "callbacks.fast_path.channels_last=true",
                                      "callbacks.fast_path.compile=default")), refusal
    assert compile_refusal("max-autotune-no-cudagraphs", False, "cuda") is None
    assert compile_refusal("default", True, "cuda") is None
    assert compile_refusal("reduce-overhead", False, "cpu") is None          # falls back to default there


def test_optimizers_become_capturable_and_checkpoints_keep_their_own_flags():
    w = torch.nn.Parameter(torch.ones(3))
    adam, sgd = torch.optim.Adam([w], lr=0.1), torch.optim.SGD([w], lr=0.1)
    w.grad = torch.ones(3)
    adam.step()
    assert adam.state[w]["step"].device.type == "cpu"
    before = make_capturable([adam, sgd])
    assert before == [[False], [False]] and adam.param_groups[0]["capturable"] is True
    assert "capturable" not in sgd.param_groups[0]
    fast_path = FastPath(cuda_graph=True)
    fast_path._flags = before
    checkpoint = {"optimizer_states": [adam.state_dict(), sgd.state_dict()]}
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["capturable"] is True
    fast_path.on_save_checkpoint(None, None, checkpoint)
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["capturable"] is False
    assert adam.param_groups[0]["capturable"] is True           # the live optimizer keeps capturing
    # a fused Adam too: its step() refuses a capture without the flag (its step counts are on the device)
    fused = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1, fused=True)
    assert make_capturable([fused]) == [[False]] and fused.param_groups[0]["capturable"] is True


# --- on a GPU -----------------------------------------------------------------------------------------

def gpu_cfg(make_cfg, *overrides):
    return make_cfg(*overrides, "trainer.accelerator=gpu", "data.image_size=32", "data.batch_size=32",
                    "trainer.limit_train_batches=8", "trainer.max_epochs=2")


def close_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        if sa[k].is_floating_point():
            torch.testing.assert_close(sa[k], sb[k], rtol=2e-3, atol=2e-4, msg=k)
        else:
            assert torch.equal(sa[k], sb[k]), k


def eager_and_captured(cfg, graph_warmup: int, schedule=lambda: []):
    """Two fits of ``cfg`` with deterministic cuDNN: eager, then with the captured step (``schedule()``:
    fresh callbacks both fits need, e.g. PGGAN's growth). Returns the two (model, trainer) pairs and
    the FastPath callback."""
    torch.backends.cudnn.deterministic = True
    try:
        eager = fit(cfg, *schedule())
        fast_path = FastPath(cuda_graph=True, graph_warmup=graph_warmup)
        captured = fit(cfg, *schedule(), fast_path)
    finally:
        torch.backends.cudnn.deterministic = False
    return eager, captured, fast_path


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", ["dcgan", "dcgan-bf16", "dcgan-scheduler", "cdcgan-diffaugment",
                                  "wgan_gp-5-critic-steps", "wgan-weight-clip", "wgan-critic-warmup",
                                  "dcgan-gradient-clip", "artgan-pretraining", "artgan-fresh-fakes",
                                  "dcgan-fused-adam"])
def test_the_captured_graph_trains_as_the_eager_step_does(make_cfg, case):
    (eager, eager_trainer), (captured, captured_trainer), fast_path = eager_and_captured(
        gpu_cfg(make_cfg, *CASES[case]), graph_warmup=3)
    # the same noise (drawn inside the graph from the same generator state), so the same updates
    close_state(eager, captured)
    assert captured_trainer.global_step == eager_trainer.global_step > 0
    assert captured.batches_seen == eager.batches_seen == 16
    assert captured.captured_step is None                        # released at the end of training
    assert fast_path.captures == (2 if case == "dcgan-scheduler" else 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pggan_captured_through_its_growth_trains_as_the_eager_step_does(make_cfg):
    cfg = make_cfg(*PGGAN_GROWTH, "trainer.accelerator=gpu")
    (eager, _), (captured, _), fast_path = eager_and_captured(
        cfg, graph_warmup=1, schedule=lambda: [instantiate_checked(cfg.callbacks.growth, "callbacks.growth")])
    close_state(eager, captured)
    assert captured.phase == eager.phase == (8, 1.0)
    assert fast_path.captures == 3          # 4x4; 8x8 fading in (alpha read on the device); 8x8 grown in


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_decaying_instance_noise_captured_trains_as_the_eager_step_does(make_cfg):
    (eager, _), (captured, _), fast_path = eager_and_captured(
        make_cfg(*DECAYING_NOISE, "trainer.accelerator=gpu"), graph_warmup=1)
    close_state(eager, captured)
    assert fast_path.captures == 2          # while the std decays (read on the device), then without noise


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_ada_captured_trains_as_the_eager_step_does(make_cfg):
    cfg = make_cfg(*ADA, "trainer.accelerator=gpu")
    (eager, _), (captured, _), fast_path = eager_and_captured(cfg, graph_warmup=1)
    close_state(eager, captured)
    assert captured.d_augment.p == eager.d_augment.p > 0
    assert fast_path.captures >= 2                     # without augmentation, then with p read on the device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_artgan_extra_g_update_captured_trains_as_the_eager_step_does(make_cfg):
    (eager, eager_trainer), (captured, captured_trainer), fast_path = eager_and_captured(
        gpu_cfg(make_cfg, *EXTRA_G), graph_warmup=2)
    close_state(eager, captured)
    assert captured.extra_g_updates == eager.extra_g_updates > 0       # the second graph replayed as decided
    assert captured_trainer.global_step == eager_trainer.global_step
    assert fast_path.captures == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fast_path", [dict(channels_last=True, compile="default"),
                                       dict(channels_last=False, compile="max-autotune-no-cudagraphs"),
                                       dict(channels_last=True, cuda_graph=True)])
def test_documented_fast_paths_train_in_bf16(make_cfg, fast_path):
    cfg = gpu_cfg(make_cfg, "model=dcgan", *NARROW["dcgan"], "trainer.precision=bf16-mixed")
    model, trainer = fit(cfg, FastPath(**fast_path))
    assert torch.isfinite(torch.tensor(model.logged["train/d_loss"])) and trainer.global_step == 32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_artgan_trains_in_bf16_with_channels_last(make_cfg):
    cfg = gpu_cfg(make_cfg, "model=artgan", *NARROW["artgan"], "trainer.precision=bf16-mixed")
    model, _ = fit(cfg, FastPath(channels_last=True))
    assert all(torch.isfinite(torch.tensor(v)) for v in model.logged.values())
