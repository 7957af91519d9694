"""One run: its execution (the DAG walk and each task attempt), the limits it runs under,
the context a task sees, and the results a caller gets back."""
