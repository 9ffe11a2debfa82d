"""One training loop (train_one_epoch / evaluate / fit) shared by finetune and qat, and what it is handed:
optimisers and lr schedules (optim), losses (losses), block freezing (freeze); metrics for its results."""
