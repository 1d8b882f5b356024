"""Pieces every TRL adapter shares: precision, LoRA config, common trainer arguments, callbacks."""

from __future__ import annotations

from transformers import TrainerCallback

from ..config import preset_to_yaml
from ..config.schema import Preset
from ..distributed import fit_wrap_policy, is_sharded, sharded_trainer_args
from ..generation.merged import merged_into, merged_model
from ..rundir import RunDir, append_metrics, atomic_directory, atomic_write_text, start_run, write_final_marker
from ..runtime import use_cpu


def use_bf16(preset: Preset) -> bool:
    import torch

    if preset.training.precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return preset.training.precision == "bf16"


def weights_dtype(preset: Preset):
    """Weights stay fp32 on a CPU; on a GPU the frozen base of a LoRA run is kept in bf16/fp16."""
    import torch

    if preset.lora is None:
        return torch.float32  # full fine-tuning: fp32 master weights, autocast does the rest
    if use_bf16(preset):
        return torch.bfloat16
    return torch.float16 if preset.training.precision == "fp16" else torch.float32


def load_base(preset: Preset, tokenizer):
    """The stage's base model as it trains: `model_name` in `weights_dtype`, or with `quantization`
    bitsandbytes' frozen quantized base prepared for LoRA training (QLoRA).

    peft's `prepare_model_for_kbit_training` freezes every base weight and casts the modules
    bitsandbytes left in half precision (norms, embeddings) to fp32 for stable training. Its own
    gradient checkpointing stays off here: `training.gradient_checkpointing` switches that on, in
    the trainer, the same way with or without quantization.
    """
    from ..models.loading import load_causal_lm

    model = load_causal_lm(
        preset.model_name, dtype=weights_dtype(preset), tokenizer=tokenizer, quantization=preset.quantization
    )
    if preset.quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def adapters_in_fp32(model) -> None:
    """Cast the trainable parameters (the LoRA adapters, a reward head) back to fp32.

    TRL's trainers cast a quantized model's trainable weights to bf16 (QLoRA paper's choice, for
    memory); the adapters are small, and fp32 keeps AdamW's small updates from rounding away, so
    our adapters train in full precision over the quantized base. A no-op without quantization.
    """
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype in (torch.bfloat16, torch.float16):
            param.data = param.data.float()


def merged_for_final(model, preset: Preset, tokenizer, adapter_name: str = "default", *, keep: bool = False):
    """`adapter_name` of the peft `model` merged into its base, as a `final/` saves it (`merged_model`;
    `keep`: `model` goes on being used, so it is merged out of place).

    With `quantization` it is merged into the base loaded again without quantization: a quantized base
    cannot hold a merged adapter exactly (peft would dequantize, add and round the sum back to 4 or 8
    bits) nor load where bitsandbytes is missing. QLoRA's usual export.
    """
    if preset.quantization is None:
        return merged_model(model, adapter_name, keep=keep)
    from ..models.loading import load_causal_lm

    base = load_causal_lm(preset.model_name, dtype=weights_dtype(preset), tokenizer=tokenizer)
    return merged_into(base, model, adapter_name)


def lora_config(preset: Preset, task_type: str | None = "CAUSAL_LM", **extra):
    """The peft `LoraConfig` for the preset's `lora:` section, or None for full fine-tuning."""
    if preset.lora is None:
        return None
    from peft import LoraConfig

    target = preset.lora.target_modules
    return LoraConfig(
        r=preset.lora.r,
        lora_alpha=preset.lora.alpha,
        lora_dropout=preset.lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        task_type=task_type,
        **extra,
    )


def _checkpointing_arg(enabled: bool) -> dict:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing` (the old name warns)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": enabled}


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in backward (non-reentrant), under whichever name this transformers has."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    argument = "activation" if enable.__name__.startswith("activation") else "gradient"
    enable(**{f"{argument}_checkpointing_kwargs": {"use_reentrant": False}})


def common_trainer_args(preset: Preset, run: RunDir, has_eval: bool) -> dict:
    """The `TrainingArguments` fields every TRL stage sets from the preset (`trl_config.build_trl_config`
    calls it); `config.trl_fields.COMMON_OWNED` lists the same fields, refused in `training.<stage>`."""
    t = preset.training
    return dict(
        output_dir=str(run.checkpoints),
        learning_rate=t.lr,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        seed=t.seed,
        warmup_steps=t.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.lr_scheduler,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.save_steps if has_eval else None,
        **_checkpointing_arg(t.gradient_checkpointing),
        bf16=use_bf16(preset),
        fp16=t.precision == "fp16",
        report_to=[r for r in as_list(t.report_to) if r != "tensorboard"],
        dataloader_pin_memory=not use_cpu(),
        use_cpu=use_cpu(),  # joins `accelerate launch` CPU processes into one gloo group
        **sharded_trainer_args(),
    )


def evaluation_at_end(trainer) -> dict:
    """The evaluation of the final weights: the trainer's own when it just ran one, else a new one.

    transformers evaluates at the last step when it falls on `eval_steps`; evaluating again would
    log a duplicate line.
    """
    history = trainer.state.log_history
    last_eval = next((h for h in reversed(history) if "eval_loss" in h), None)
    if last_eval is not None and last_eval.get("step") == trainer.state.global_step:
        return {k: v for k, v in last_eval.items() if k.startswith("eval_")}
    return trainer.evaluate()


def train_and_save_merged(trainer, preset: Preset, run: RunDir, resume_from, has_eval: bool, stage: str) -> dict:
    """Train, evaluate the final weights, and write `final/`: the adapter merged into the base.

    Merged, so that `final/` loads like any causal LM and the next stage's "adapters disabled"
    reference is this model; with `quantization`, merged into the full-precision base
    (`merged_for_final`).
    """
    if preset.quantization is not None:
        adapters_in_fp32(trainer.model)  # TRL cast them to bf16; the optimizer is built in train()
    fit_wrap_policy(trainer.accelerator, trainer.model)
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = dict(result.metrics)
    if has_eval:
        metrics.update(evaluation_at_end(trainer))
    model = trained_model_to_save(
        trainer, lambda: same_model_unsharded(trainer, load_base(preset, trainer.processing_class))
    )
    if trainer.is_world_process_zero():
        if hasattr(model, "peft_config"):
            model = merged_for_final(model, preset, trainer.processing_class)
        with atomic_directory(run.final) as tmp:
            model.save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
            write_final_marker(
                tmp,
                stage=stage,
                base=preset.model_name,
                merged=preset.lora is not None,
                steps=trainer.state.global_step,
            )
    trainer.accelerator.wait_for_everyone()
    return metrics


def trained_model_to_save(trainer, build, model=None):
    """The trained model as rank 0 writes it to `final/` (None on the other ranks when sharded).

    Unsharded, that is `model` (default `trainer.model`). Sharded (FSDP2, ZeRO-3), no process holds
    the whole model: every rank takes part in gathering the full state dict onto rank 0's CPU
    (accelerate's `get_state_dict`), which loads it into `build()`, the same model unsharded, so
    that merging and saving run as without sharding and `final/` has the same layout. Rank 0 then holds the
    model twice in CPU memory for a moment (the gathered state and the copy). `build()` may leave
    out parts that are not saved (GRPO's copy has no RM adapter); it may not have weights the
    trained model lacks.
    """
    if not is_sharded(trainer.accelerator):
        return trainer.model if model is None else model
    # a collective: every rank calls it; DeepSpeed gathers through its engine (`model_wrapped`)
    state = trainer.accelerator.get_state_dict(getattr(trainer, "model_wrapped", None) or trainer.model)
    if not trainer.is_world_process_zero():
        return None
    copy = build()
    own = copy.state_dict().keys()
    missing = [k for k in own if k not in state]
    if missing:  # our bug: the copy is not the model that trained
        raise RuntimeError(f"the gathered state dict lacks {len(missing)} weights of the copy, e.g. {missing[:3]}")
    copy.load_state_dict({k: v for k, v in state.items() if k in own})  # its own weights only (GRPO: no RM adapter)
    return copy


def same_model_unsharded(trainer, base):
    """`base` (a fresh, unsharded model) with the trainer's LoRA configuration, if its model has one:
    the trained model built again, for `trained_model_to_save`."""
    if not hasattr(trainer.model, "peft_config"):
        return base
    from peft import get_peft_model

    (name, config), *_ = trainer.model.peft_config.items()
    return get_peft_model(base, config, adapter_name=name)


def logging_callbacks(preset: Preset, run: RunDir) -> list[TrainerCallback]:
    """metrics.jsonl always (and preset.yml, written as training starts); TensorBoard under
    `<output_dir>/tensorboard` when asked for."""
    callbacks: list[TrainerCallback] = [MetricsFileCallback(run, preset_to_yaml(preset))]
    if "tensorboard" in as_list(preset.training.report_to):
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run.tensorboard))))
    return callbacks


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON object per logging step (`step` + the logged metrics) on the main process.

    As training begins (data and models loaded, a checkpoint's state restored) it makes the output
    directory this run's (`rundir.start_run`): preset.yml, trl_config.json (the trainer's TRL config),
    and metrics.jsonl cut to what the checkpoint had logged (to nothing from step 0); a run that
    fails before that leaves them as they were.
    """

    def __init__(self, run: RunDir, preset_yaml: str):
        self.run, self.preset_yaml = run, preset_yaml
        self.path = run.metrics

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            # the lines the checkpoint's trainer_state.json holds at its step were logged before it was
            # saved; those after it (the train summary, a last evaluation) a resumed run logs again
            at_step = sum(1 for h in state.log_history if h.get("step") == state.global_step)
            start_run(self.run, self.preset_yaml, state.global_step, metric_lines_at_step=at_step)
            # the TRL config the trainer runs with, as it runs (GRPO's generation settings included)
            atomic_write_text(self.run.trl_config, args.to_json_string())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_metrics(self.path, {"step": state.global_step, **{k: _plain(v) for k, v in logs.items()}})


def _plain(value):
    try:
        return float(value) if not isinstance(value, (int, str, bool)) else value
    except (TypeError, ValueError):
        return str(value)


def as_list(value) -> list[str]:
    if value is None or value == "none":
        return []
    return [value] if isinstance(value, str) else list(value)


def sampling_policy(preset: Preset, tokenizer, adapter_name: str, checkpointing: bool = False):
    """The SFT model + a fresh trainable LoRA (dropout 0) that samples with nothing but what the RL
    trainer asks for (`clean_generation_config`): PPO's and GRPO's policy.

    Dropout would make pi_old != pi on identical weights, and the reference (adapters off) a
    different network from the policy.
    """
    from peft import get_peft_model

    from ..models.loading import clean_generation_config

    base = load_base(preset, tokenizer)  # with `quantization`, the quantized base (the reference too)
    clean_generation_config(base, tokenizer)
    if checkpointing:
        enable_activation_checkpointing(base)
        base.enable_input_require_grads()
    config = lora_config(preset, "CAUSAL_LM")
    config.lora_dropout = 0.0
    return get_peft_model(base, config, adapter_name=adapter_name)
