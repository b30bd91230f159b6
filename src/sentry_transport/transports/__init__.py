"""Transport drivers: one small module per runtime, each a thin pump over the engine."""
