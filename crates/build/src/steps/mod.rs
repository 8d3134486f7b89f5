//! Build steps.

pub mod conda;
