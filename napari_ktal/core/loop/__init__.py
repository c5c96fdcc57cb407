"""The active-learning loop: schedule, cycles, oracle runs, labeling session, benchmark."""
