"""gan_lab's SLURM launcher (``hydra/launcher=slurm``): :class:`gan_lab.slurm.SlurmLauncher`, subclassed
here because Hydra accepts only plugin classes defined under ``hydra_plugins``."""
try:
    from gan_lab.slurm import SlurmLauncher as _SlurmLauncher
except ImportError:  # installed without the `sweep` extra (hydra-submitit-launcher): no SLURM launcher
    pass
else:
    class SlurmLauncher(_SlurmLauncher):
        """:class:`gan_lab.slurm.SlurmLauncher`."""
