//! The root package holds only tests and benches.
