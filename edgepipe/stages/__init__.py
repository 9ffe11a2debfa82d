"""One stage per module: each has a name, the recipe slice it depends on, and run(ctx) -> StageResult."""
