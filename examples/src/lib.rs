//! Complete example servers live in `examples/examples/`; this library is empty.
