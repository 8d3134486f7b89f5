//! Build steps.

pub mod bytecode;
pub mod conda;
pub mod pieces;
pub mod pip;
pub mod user;
