"""What the task, method and experiment layers share without depending on each other."""
