"""What a model is: its config.json, its shape for the planner, its tensors (Qwen2), safetensors headers."""
