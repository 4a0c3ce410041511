//! Placeholder: the ws adapter arrives with issue 3.
