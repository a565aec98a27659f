"""Chat models: the Chinese-Alpaca-2 registry, prompt format, RoPE scaling and backends."""
