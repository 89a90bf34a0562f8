"""This machine and what it reaches: memory and GPU, the model hub, mlx.launch's environment."""
