"""Fine-tuning: LoRA, QLoRA and full SFT on transformers + PEFT + TRL."""
