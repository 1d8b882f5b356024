"""Our PPO step against the peer's (TRL 1.12 PPOTrainer) and our GRPO step, measured in one run with the same flags.

Runs ``benchmarks/ppo_step.py --json-only`` (with this Python, which must import
``eulerforge_trl``: the repository's ``.venv``), then ``benchmarks/peer_trl112.py`` (which
re-executes itself in ``.venv-peer/``, creating it on first use), then ``benchmarks/grpo_step.py``,
one after the other, never at once. All get the same shape and run flags
(``benchmarks/_shapes.py``: model, batch, prompt/response lengths, LoRA rank, PPO epochs,
minibatches, steps, warmup, seed, threads, device, dtype). Without ``--model`` every side builds
the same random ``qwen3_5_text`` with the tokenizer our package ships; with ``--model`` (a local
directory, or a built-in name that is resolved here to its cache directory) every side loads that
model and its tokenizer. ``--critic`` goes to ours only (the peer always trains a separate full
value model); ``--num-generations`` to GRPO only (``--batch`` completions a step on both of ours).

Prints our phase table (ours vs the floor), a side-by-side table (ours vs peer), GRPO vs PPO, and,
as the last line, one JSON object: ``ours_step_s``, ``peer_step_s``, ``ours_over_peer``
(step-time ratio), ``step_over_floor``, ``ours_peak_mem_mib``, ``peer_peak_mem_mib``,
``ours_over_peer_mem``, ``phases`` and ``floor_phases`` (median s), ``grpo_step_s``,
``grpo_over_ppo``, ``grpo_over_ppo_mem``, the shape, and the three benchmarks' full results under
``ours``, ``peer`` and ``grpo``::

    .venv/bin/python benchmarks/compare.py                          # tiny default
    .venv/bin/python benchmarks/compare.py --steps 2 --threads 1    # a quick look
    .venv/bin/python benchmarks/compare.py --hidden 256 --layers 4 --batch 16 --response-len 64
    .venv/bin/python benchmarks/compare.py --model smollm2-135m-instruct
    .venv/bin/python benchmarks/compare.py --model smollm2-135m-instruct --generation vllm

``--generation vllm`` runs ours with the vllm rollout engine (``make install-vllm``) and, right after,
the same step with hf: ``vllm_over_hf`` is that ratio, measured in this run (GRPO samples with the
same engine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _shapes  # noqa: E402
import ppo_step  # noqa: E402  (top level imports only the standard library and _shapes)

# Our benchmarks turn THP_MEM_ALLOC_ENABLE on as our CLI does (ppo_step.start); the peer runs as its
# users run it, with this variable only if the user set it.
USER_THP = os.environ.get("THP_MEM_ALLOC_ENABLE")

# Fields both results must agree on for the ratio to mean anything.
SAME = ("device", "dtype", "threads", "vocab", "model", *_shapes.SHAPE_FLAGS, "steps", "generated_len")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _shapes.add_shape_args(p)
    p.add_argument("--critic", choices=["adapter", "value_head"], default=None, help="ours only (default: ours')")
    ppo_step.add_generation_args(p)
    p.add_argument("--no-peer", action="store_true", help="skip the peer (its fields come out null)")
    p.add_argument("--no-grpo", action="store_true", help="skip our GRPO step (its fields come out null)")
    p.add_argument(
        "--num-generations", type=int, default=4, help="GRPO completions per prompt (--batch completions a step)"
    )
    args = p.parse_args(argv)
    _shapes.check_shape_args(p, args)
    return args


def bad_input(message: str) -> None:
    """One line and exit status 2, as the library's CLI does for bad input."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def resolve_model(name: str | None) -> str | None:
    """A built-in model name (e.g. smollm2-135m-instruct) -> its directory, built on first use.

    The peer runs in a venv without eulerforge_trl, so both sides get the directory.
    """
    if name is None:
        return None
    from eulerforge_trl.models import builtin
    from eulerforge_trl.models.loading import ModelError, local_source

    try:
        path = local_source(name)
    except ModelError as err:
        bad_input(f"--model {err}")
    if not (Path(path) / "config.json").is_file():
        known = ", ".join(sorted(builtin.REGISTRY))
        bad_input(f"--model {name}: not a model directory (no config.json) nor a built-in name ({known})")
    return path


def peer_env() -> dict[str, str]:
    env = dict(os.environ)
    if USER_THP is None:
        env.pop("THP_MEM_ALLOC_ENABLE", None)
    return env


def run_json(name: str, cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd` (stderr passes through), return the JSON object on the last line of its stdout."""
    print(f"[compare] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(lines[-20:])
        sys.exit(f"error: {name} failed (exit status {proc.returncode}); its stdout ended with:\n{tail}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        sys.exit(f"error: {name}'s last line is not JSON: {lines[-1][:200]}")


def mismatches(ours: dict, peer: dict) -> list[str]:
    return [f"{k}: ours {ours.get(k)!r}, peer {peer.get(k)!r}" for k in SAME if ours.get(k) != peer.get(k)]


def print_side_by_side(ours: dict, peer: dict | None) -> None:
    def ratio(a, b) -> str:
        return f"{a / b:.2f}x" if a is not None and b else ""

    p = peer or {}
    mem_kind = ours["mem_kind"]
    rows = [
        ("", "ours", "peer", "ours/peer"),
        (
            "step (median s)",
            f"{ours['step_s']:.4f}",
            f"{p['step_s']:.4f}" if peer else "-",
            ratio(ours["step_s"], p.get("step_s")),
        ),
        (
            f"peak memory ({mem_kind}, MiB)",
            f"{ours['peak_mem_mib']:.0f}",
            f"{p['peak_mem_mib']:.0f}" if peer else "-",
            ratio(ours["peak_mem_mib"], p.get("peak_mem_mib")),
        ),
        ("floor (s)", f"{ours['floor_s']:.4f}", "", ""),
        ("step / floor", f"{ours['step_over_floor']:.2f}", f"{p['step_s'] / ours['floor_s']:.2f}" if peer else "-", ""),
    ]
    print()
    print(f"ours: {ours['bench']}   peer: {p.get('peer', 'not run')}")
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(r[1:], widths[1:])))


def print_grpo(ours: dict, grpo: dict | None) -> None:
    """Our GRPO step next to our PPO step, at the same number of sampled completions per step."""
    if grpo is None:
        return
    print()
    print(
        f"GRPO vs PPO (ours), {ours['batch']} completions a step each "
        f"(GRPO: {grpo['prompts_per_step']} prompts x {grpo['num_generations']})"
    )
    print(
        f"  step (median s)   PPO {ours['step_s']:.4f}   GRPO {grpo['step_s']:.4f}   {grpo['step_s'] / ours['step_s']:.2f}x"
    )
    print(
        f"  peak memory (MiB) PPO {ours['peak_mem_mib']:.0f}   GRPO {grpo['peak_mem_mib']:.0f}   "
        f"{grpo['peak_mem_mib'] / ours['peak_mem_mib']:.2f}x"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_name = args.model
    args.model = resolve_model(args.model)
    flags = _shapes.forwarded_argv(args)
    ours_cmd = [sys.executable, str(HERE / "ppo_step.py"), "--json-only", *flags]
    if args.critic:
        ours_cmd += ["--critic", args.critic]
    engine = ["--generation", args.generation, "--vllm-dtype", args.vllm_dtype]
    merged = ["--merged-copy", args.merged_copy]
    ours = run_json("ppo_step.py", [*ours_cmd, *engine, *merged])
    # with vllm, the same step with hf beside it: what the engine buys, measured in this run
    hf = run_json("ppo_step.py (hf)", [*ours_cmd, *merged]) if args.generation == "vllm" else None
    peer = None
    if not args.no_peer:
        # a pretrained model brings its tokenizer; the random one gets the tokenizer ours uses
        tokenizer = args.model or str(_shapes.TINY_TOKENIZER_DIR)
        peer_cmd = [sys.executable, str(HERE / "peer_trl112.py"), *flags, "--tokenizer", tokenizer]
        peer = run_json("peer_trl112.py", peer_cmd, env=peer_env())
    grpo = None
    if not args.no_grpo:
        grpo_cmd = [sys.executable, str(HERE / "grpo_step.py"), "--json-only", *flags]
        grpo = run_json("grpo_step.py", [*grpo_cmd, "--num-generations", str(args.num_generations), *engine])
    warnings = mismatches(ours, peer) if peer else []
    for w in warnings:
        print(f"[compare] warning: the runs differ in {w}", file=sys.stderr)
    if peer and peer["mem_kind"] != ours["mem_kind"]:
        warnings.append(f"mem_kind: ours {ours['mem_kind']!r}, peer {peer['mem_kind']!r}")

    ppo_step.print_table(ours)
    print_side_by_side(ours, peer)
    print_grpo(ours, grpo)
    if hf:
        print(
            f"vllm vs hf (ours): step {ours['step_s']:.3f} vs {hf['step_s']:.3f} s = {ours['step_s'] / hf['step_s']:.2f}x; "
            f"generate {ours['generate_s']:.3f} vs {hf['generate_s']:.3f} s; weight sync {ours['weight_sync_s']:.3f} s"
        )
    result = {
        "ours_step_s": ours["step_s"],
        "peer_step_s": peer["step_s"] if peer else None,
        "ours_over_peer": round(ours["step_s"] / peer["step_s"], 3) if peer else None,
        "step_over_floor": ours["step_over_floor"],
        "peer_step_over_floor": round(peer["step_s"] / ours["floor_s"], 3) if peer else None,
        "floor_s": ours["floor_s"],
        "ours_peak_mem_mib": ours["peak_mem_mib"],
        "peer_peak_mem_mib": peer["peak_mem_mib"] if peer else None,
        "ours_over_peer_mem": round(ours["peak_mem_mib"] / peer["peak_mem_mib"], 3) if peer else None,
        "mem_kind": ours["mem_kind"],
        # our step's phases and the floor's (median s): where the time goes
        "phases": {name: ours[f"{name}_s"] for name in (*ppo_step.PHASES.values(), "other")},
        "floor_phases": {name: ours[f"floor_{name}_s"] for name in ("generate", "reward", "reference", "update")},
        **{k: ours[k] for k in ("device", "dtype", "threads", "vocab", *_shapes.SHAPE_FLAGS, "critic", "steps")},
        "model_name": model_name,
        "generation": args.generation,
        "merged_copy": ours.get("merged_copy"),
        "hf_step_s": hf["step_s"] if hf else None,
        "vllm_over_hf": round(ours["step_s"] / hf["step_s"], 3) if hf else None,
        "hf_generate_s": hf["generate_s"] if hf else None,
        "grpo_step_s": grpo["step_s"] if grpo else None,
        "grpo_generation": grpo.get("generation") if grpo else None,
        "grpo_over_ppo": round(grpo["step_s"] / ours["step_s"], 3) if grpo else None,
        "grpo_peak_mem_mib": grpo["peak_mem_mib"] if grpo else None,
        "grpo_over_ppo_mem": round(grpo["peak_mem_mib"] / ours["peak_mem_mib"], 3) if grpo else None,
        "warnings": warnings,
        "ours": ours,
        "ours_hf": hf,
        "peer": peer,
        "grpo": grpo,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
