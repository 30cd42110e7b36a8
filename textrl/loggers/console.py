"""One console line per update with the headline metrics (printed above the progress bar)."""

from __future__ import annotations

from tqdm import tqdm

from textrl.hookspecs import hookimpl

HEADLINE = ("objective/score", "objective/rlhf_reward", "objective/kl", "kl/beta", "loss/policy", "loss/value",
            "perf/tokens_per_s")


class ConsoleLogger:
    """Prints ``update N | score ... | kl ...`` lines and the final summary."""

    @hookimpl
    def textrl_on_train_start(self, cfg, run_dir):
        tqdm.write(f"textrl: stage={cfg.stage} policy={cfg.policy.model} run_dir={run_dir}")

    @hookimpl
    def textrl_on_update_end(self, update, metrics):
        parts = [f"{k.split('/')[-1]} {metrics[k]:.4g}" for k in HEADLINE if k in metrics]
        tqdm.write(f"update {update:>4} | " + " | ".join(parts))

    @hookimpl
    def textrl_on_train_end(self, summary):
        tqdm.write("textrl: mean score {first_score:.3f} -> {last_score:.3f} in {wall_time_s:.0f}s".format(**summary))
