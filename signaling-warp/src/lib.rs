//! Placeholder: the warp adapter arrives with issue 3.
