//! Benchmarks run from the CLI (`hubsync bench …`): they print figures and ratios from one run.
