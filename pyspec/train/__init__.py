"""Drafter training (the pyspec[train] extra: PyTorch). `pyspec train dflash` on the command line.

    from pyspec.train import train_dflash
    train_dflash("target.gguf", "drafter.gguf", steps=2000)

train_dflash runs the target in this process and PyTorch in a child process (dflash.py says
why); evaluate / simulate_steps import PyTorch here.
"""
__all__ = ["train_dflash", "TrainOptions", "TrainResult", "EvalReport", "evaluate", "simulate_steps"]


def __getattr__(name):
    if name in ("evaluate", "simulate_steps"):  # PyTorch (trainer.py)
        from . import trainer
        return getattr(trainer, name)
    if name in __all__:
        from . import dflash
        return getattr(dflash, name)
    raise AttributeError(f"module 'pyspec.train' has no attribute {name!r}")
