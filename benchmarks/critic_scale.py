"""The critic's first PPO update, before and after putting it on the returns' scale (issue 11, #2).

"Before" is how the critic used to start: a plain copy of the reward head, which speaks raw RM
units while the returns are in normalised units, with one gradient clip shared by policy and
critic. "After" is today's trainer: the copied head folded into normalised units, policy and
critic clipped apart. Both runs sample the same batch (same seeds), so only the critic differs.

    python benchmarks/critic_scale.py --sft outputs/smollm2/01_sft/final --rm outputs/smollm2/02_rm/final \
        --prompts examples/data/chat/prompts.jsonl --critic adapter

Prints one line per run: the first update's value loss, the share of tokens outside the value
clip (|return - V_old| > clip_range_value), the return std, the policy's pre-clip gradient norm, the critic's, and the factor that
scales the policy's step (a shared clip: max_norm / the joint norm; apart: max_norm / the
policy's own), then one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import tempfile
from pathlib import Path

import torch


def first_update(args, before: bool) -> dict:
    from eulerforge_trl.config import load_preset
    from eulerforge_trl.rundir import RunDir
    from eulerforge_trl.trainers.ppo import losses
    from eulerforge_trl.trainers.ppo.trainer import PPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        preset = load_preset(
            args.preset,
            [
                f"model_name={args.sft}",
                f"training.reward_model.checkpoint_path={args.rm}",
                f"data.path={args.prompts}",
                "data.eval_split=0",
                f"training.batch_size={args.batch}",
                f"training.ppo.critic={args.critic}",
                f"training.ppo.score_norm_samples={args.norm_samples}",
                "training.ppo.epochs=1",  # one update: the first one
                "training.ppo.num_mini_batches=1",
                "training.report_to=[]",
            ],
            output_dir=tmp,
        )
        torch.manual_seed(args.seed)
        trainer = PPOTrainer(preset, RunDir(Path(tmp)))
        trainer.ensure_score_scale()
        mean, std = trainer.scale.stats
        if before:  # undo the fold: the head back to the reward head's raw units
            trainer.critic.rescale(-mean / std, 1.0 / std)
        torch.manual_seed(args.seed + 1)
        metrics = trainer.train_step()
        roll, targets, _, _ = trainer._last
        max_norm = preset.training.max_grad_norm
        policy, critic = metrics["grad_norm_policy"], metrics["grad_norm_critic"]
        shared = max_norm / math.hypot(policy, critic)
        result = {
            "critic_start": "raw reward head, shared clip" if before else "normalised units, clipped apart",
            "value_loss": metrics["value_loss"],
            "value_clipfrac": metrics["value_clipfrac"],
            "return_std": losses.masked_var(targets.returns, roll.response_mask).sqrt().item(),
            # tokens whose target lies beyond the value clip around V_old: the critic cannot reach it in one update
            "returns_outside_clip": losses.masked_mean(
                ((targets.returns - targets.values).abs() > preset.training.ppo.clip_range_value).float(),
                roll.response_mask,
            ).item(),
            "grad_norm_policy": policy,
            "grad_norm_critic": critic,
            "policy_step_scale": min(1.0, shared if before else max_norm / policy),
            "score_mean": mean,
            "score_std": std,
        }
        del trainer
        gc.collect()
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sft", required=True, help="the SFT stage's final/")
    p.add_argument("--rm", required=True, help="the RM stage's final/ (trained on --sft)")
    p.add_argument("--prompts", required=True, help="PPO prompts JSONL")
    p.add_argument("--preset", default="smollm2_135m_lora_ppo.yml")
    p.add_argument("--critic", choices=["adapter", "value_head"], default="adapter")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--norm-samples", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows = [first_update(args, before=True), first_update(args, before=False)]
    for r in rows:
        print(
            f"{r['critic_start']:<34} value_loss {r['value_loss']:8.3f}  outside clip {r['returns_outside_clip']:.0%}  "
            f"return_std {r['return_std']:.2f}  grad_norm policy {r['grad_norm_policy']:.3f} critic "
            f"{r['grad_norm_critic']:.3f}  policy step x{r['policy_step_scale']:.2f}"
        )
    print(json.dumps({"critic": args.critic, "before": rows[0], "after": rows[1]}))


if __name__ == "__main__":
    main()
