"""Drafter training (the pyspec[train] extra: PyTorch). `pyspec train dflash` on the command line.

    from pyspec.train import train_dflash
    train_dflash("target.gguf", "drafter.gguf", steps=2000)

PyTorch is imported on first use of these names, so `pyspec --help` works without it.
"""
__all__ = ["train_dflash", "TrainOptions", "TrainResult", "EvalReport", "evaluate", "simulate_steps"]


def __getattr__(name):
    if name in __all__:
        from . import dflash
        return getattr(dflash, name)
    raise AttributeError(f"module 'pyspec.train' has no attribute {name!r}")
