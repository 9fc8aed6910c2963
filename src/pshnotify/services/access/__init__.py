"""Who may use the console: users, passwords, sessions' stamps."""
