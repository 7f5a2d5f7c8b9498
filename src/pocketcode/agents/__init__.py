"""Agent providers. Only this package spawns or kills processes."""
