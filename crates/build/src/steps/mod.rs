//! Build steps.

pub mod conda;
pub mod pip;
pub mod user;
