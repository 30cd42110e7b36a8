"""``python -m textrl``: the same as the ``textrl`` command (what wandb sweeps call)."""

from textrl.cli import main

main()
