//! Benchmarks for cdr-relay live in `benches/benches/`; this library is empty.
