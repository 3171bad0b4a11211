"""Built-in strategies, one pluggy plugin module each (imported as ``tokenprune.plugins``)."""
