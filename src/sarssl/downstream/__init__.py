"""Downstream tasks: task models on an encoder (segmentation decoder, regression head,
U-Net baseline), fine-tuning and linear probing at label fractions, metrics, and the
results tables. Contract: ``results/finetune/.../metrics.json`` -> ``results/tables/``."""
