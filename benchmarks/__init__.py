"""janusnet's benchmarks (not tests): ``python -m benchmarks [parse|tls|all] [--quick]``."""
