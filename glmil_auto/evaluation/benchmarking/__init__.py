"""Support for benchmarks/: accuracy-table rows, expected AUC under known truth, linear probes."""
