"""One training loop (train_one_epoch / evaluate / fit) shared by finetune and qat."""
