"""Train a tiny GPT-2 (built from a config, nothing downloaded) with CoCD in the
Hugging Face Trainer.

    python examples/hf_trainer_cocd.py --steps 30

``CoCDTrainer`` makes each training step one CoCD step whose closure is the
Trainer's ``compute_loss`` (no backward). The task: copy a fixed token pattern.
"""

import argparse
import tempfile

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TrainingArguments

from cocd_cuda import CoCD
from cocd_cuda.integrations import CoCDTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="CoCD steps (default: 30)")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default: 0.1)")
    parser.add_argument("--budget", type=int, default=32, help="compute_budget (default: 32)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=16, n_positions=16, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    ids = torch.arange(16).repeat(32, 1) % 8  # every row: 0 1 2 ... 7 0 1 ... 7
    rows = [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r} for r in ids]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    with torch.no_grad():
        before = model.eval()(**batch).loss.item()

    optimizer = CoCD(model.parameters(), lr=args.lr, compute_budget=args.budget)
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(
            output_dir=out, max_steps=args.steps, per_device_train_batch_size=32,
            learning_rate=args.lr, lr_scheduler_type="constant", report_to=[],
            save_strategy="no", logging_steps=max(args.steps // 5, 1), use_cpu=True,
            disable_tqdm=True,
        )  # fmt: skip
        trainer = CoCDTrainer(
            model=model, args=training, train_dataset=rows, optimizers=(optimizer, None)
        )
        trainer.train()
    with torch.no_grad():
        after = model.eval()(**batch).loss.item()
    print(f"training loss: {before:.4f} -> {after:.4f} after {args.steps} CoCD steps")


if __name__ == "__main__":
    main()
