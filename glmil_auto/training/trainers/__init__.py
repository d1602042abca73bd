"""GLMILTrainer, its variants (-tr NAME), the trainer lookup and checkpoints."""
