"""gan_lab's SLURM launcher (``hydra/launcher=slurm``) as a Hydra plugin: :class:`gan_lab.slurm.SlurmLauncher`."""
try:
    from gan_lab.slurm import SlurmLauncher as _SlurmLauncher
except ImportError:  # installed without the `sweep` extra (hydra-submitit-launcher): no SLURM launcher
    pass
else:
    class SlurmLauncher(_SlurmLauncher):
        """:class:`gan_lab.slurm.SlurmLauncher`."""
