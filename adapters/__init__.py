"""Model adapters: where things are in each model family (imported as ``tokenprune.adapters``)."""
