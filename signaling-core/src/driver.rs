//! The transport-agnostic connection driver (feature `driver`). Arrives with issue 3.
