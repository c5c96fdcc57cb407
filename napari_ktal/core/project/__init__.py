"""The project folder: layout, labels journal, lock, checkpoints, queries, history."""
